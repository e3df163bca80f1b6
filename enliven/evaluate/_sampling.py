"""Which frames of a clip are measured."""
from __future__ import annotations

import numpy as np


def evenly_spaced(indices: np.ndarray, count: int) -> np.ndarray:
    """At most ``count`` of ``indices`` (N,) int, evenly spaced from the first to the last, in order, no repeats."""
    return indices[np.unique(np.linspace(0, len(indices) - 1, min(count, len(indices))).astype(int))]
