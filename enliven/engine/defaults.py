"""Built-in defaults the product ships: the default portrait, where caches and data go."""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import numpy as np

from .image_io import load_photo

BUILTIN_PHOTO = "astronaut.png"  # NASA portrait of Eileen Collins (1992), public domain, via scikit-image


def builtin_photo() -> np.ndarray:
    """The built-in default portrait, (512, 512, 3) uint8 RGB."""
    with resources.as_file(resources.files("enliven.engine.assets") / BUILTIN_PHOTO) as path:
        return load_photo(path)


def cache_root() -> Path:
    """The folder of everything enliven caches outside the repo: $ENLIVEN_CACHE, default ~/.cache/enliven.

    Read at each call, so a process (or a test) that sets the variable later is honoured.
    """
    return Path(os.environ.get("ENLIVEN_CACHE", "~/.cache/enliven")).expanduser()


def data_root() -> Path:
    """The training and evaluation data set: $ENLIVEN_DATA, default ../shared/data from the working directory.

    Only ``enliven train`` and ``enliven evaluate`` read it; they are run from the checkout.
    """
    return Path(os.environ.get("ENLIVEN_DATA", "../shared/data")).expanduser()
