"""The visible synthetic-media label burned into animated frames.

Synthetic media of real people must be marked (EU AI Act art. 50): a visible label on what is
shown, and a machine-readable note in the files written (``video_io.DISCLOSURE_COMMENT``).
The live server stamps every streamed frame; the offline CLI stamps the frames of formats
that lose their metadata easily when shared (GIF).
"""
from __future__ import annotations

import numpy as np

from .errors import ShapeError

DISCLOSURE_LABEL = "AI-generated"  # burned into animated frames; no setting turns it off


def stamp_disclosure(image: np.ndarray) -> None:
    """Burn a small "AI-generated" label into the bottom-right corner of ``image``, in place.

    Args: image (H, W, 3) uint8 RGB, at least 32 px on each side; the label's height scales
        with H (about 8% of it: white text on a black box).
    Raises: ShapeError for another shape or dtype.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 32:
        raise ShapeError(f"expected an (H, W, 3) uint8 image of at least 32x32 px; got {image.shape} {image.dtype}")
    import cv2  # lazily: importing the server does not load OpenCV

    side = image.shape[0]
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.34 * side / 256, max(1, round(side / 256))
    (tw, th), base = cv2.getTextSize(DISCLOSURE_LABEL, font, scale, thick)
    pad = 3 * thick
    x, y = image.shape[1] - tw - 2 * pad, side - 2 * pad - base
    cv2.rectangle(image, (x - pad, y - th - pad), (x + tw + pad, y + base + pad), (0, 0, 0), -1)
    cv2.putText(image, DISCLOSURE_LABEL, (x, y), font, scale, (255, 255, 255), thick, cv2.LINE_AA)
