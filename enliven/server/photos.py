"""Counting the source photos still held in memory: what the deletion tests check."""
from __future__ import annotations

import gc
import threading
import weakref

import numpy as np


class PhotoCounter:
    """Counts source photo arrays still alive in memory (a weakref finalizer per photo)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.alive = 0

    def track(self, photo: np.ndarray) -> None:
        with self._lock:
            self.alive += 1
        weakref.finalize(photo, self._gone)

    def _gone(self) -> None:
        with self._lock:
            self.alive -= 1

    def collected(self) -> int:
        """Photos alive after a garbage collection (cycles freed first)."""
        gc.collect()
        return self.alive
