"""Built-in defaults the product ships: the default portrait."""
from __future__ import annotations

from importlib import resources

import numpy as np

from .image_io import load_photo

BUILTIN_PHOTO = "astronaut.png"  # NASA portrait of Eileen Collins (1992), public domain, via scikit-image


def builtin_photo() -> np.ndarray:
    """The built-in default portrait, (512, 512, 3) uint8 RGB."""
    with resources.as_file(resources.files("enliven.engine.assets") / BUILTIN_PHOTO) as path:
        return load_photo(path)
