"""A 3-channel drawing of a face mesh: for demo strips and as an input channel of the generator.

Channels of the drawing (each 0..255, antialiased):
  0  contours: face oval, both brows (closed outlines), the nose (bridge, tip and base)
     and the outer lips, as lines;
  1  regions: the inner mouth (the opening between the lips) and both eye openings, filled;
  2  irises: each iris disc, filled and clipped to its eye opening; it fades out as the lid
     gap closes below IRIS_FADE_PX, so a closed eye shows none.
"""
from __future__ import annotations

import cv2
import numpy as np

from enliven.engine import topology
from enliven.engine.errors import ShapeError

DRAWING_VERSION = 1  # bump when the drawing changes (refiners read it: their weights record this)

_SHIFT = 4  # cv2 fixed-point bits: points are drawn with 1/16 pixel precision
_ONE = 1 << _SHIFT

# Closed outline of each brow: the lower row out to the tail, the upper row back to the head.
RIGHT_BROW_OUTLINE = np.array([46, 53, 52, 65, 55, 107, 66, 105, 63, 70])
LEFT_BROW_OUTLINE = np.array([276, 283, 282, 295, 285, 336, 296, 334, 293, 300])
NOSE_BRIDGE = np.array([168, 6, 197, 195, 5, 4, 1, 19, 94, 2])
NOSE_BASE = np.array([129, 64, 98, 97, 2, 326, 327, 294, 358])

_CLOSED_CONTOURS = (topology.FACE_OVAL, RIGHT_BROW_OUTLINE, LEFT_BROW_OUTLINE, topology.LIPS_OUTER)
_OPEN_CONTOURS = (NOSE_BRIDGE, NOSE_BASE)
_REGIONS = (topology.LIPS_INNER, topology.RIGHT_EYE, topology.LEFT_EYE)
_IRISES = ((topology.RIGHT_IRIS, topology.RIGHT_EYE, topology.RIGHT_EYE_UPPER, topology.RIGHT_EYE_LOWER),
           (topology.LEFT_IRIS, topology.LEFT_EYE, topology.LEFT_EYE_UPPER, topology.LEFT_EYE_LOWER))
IRIS_FADE_PX = 2.0  # mean lid gap, pixels, below which the iris fades out


def _size_hw(size: tuple[int, int] | int) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        try:
            h, w = (int(s) for s in size)
        except (TypeError, ValueError) as e:
            raise ShapeError(f"size must be an int or (height, width), got {size!r}") from e
    if h <= 0 or w <= 0:
        raise ShapeError(f"size must be positive, got height {h}, width {w}")
    return h, w


def draw_landmarks(points: np.ndarray, size: tuple[int, int] | int, *, thickness: int = 1) -> np.ndarray:
    """Draw a face mesh as three channels: contours, inner mouth + eyes, irises.

    Args:
        points: (478, 2) or (478, 3) float, pixels of the output image (x right, y down);
            z, if given, is ignored. Points may lie outside the image (clipped).
        size: output size, an int for a square or (height, width).
        thickness: line width of the contours, pixels (>= 1).
    Returns: (H, W, 3) uint8, channels as in the module docstring.
    Raises: ShapeError if points is not (478, 2|3) of finite numbers, or size/thickness is bad.
    """
    pts = np.asarray(points)
    n = topology.NUM_LANDMARKS
    if pts.ndim != 2 or pts.shape[0] != n or pts.shape[1] not in (2, 3):
        raise ShapeError(f"points must have shape ({n}, 2) or ({n}, 3), got {pts.shape}")
    if not np.issubdtype(pts.dtype, np.number) or not np.isfinite(pts[:, :2]).all():
        raise ShapeError("points must be finite numbers")
    if int(thickness) < 1:
        raise ShapeError(f"thickness must be >= 1 pixel, got {thickness}")
    h, w = _size_hw(size)
    # Fixed point, clamped well inside cv2's int range (far-away points are simply off-image).
    limit = 4.0 * max(h, w) + 64.0
    fixed = np.round(np.clip(pts[:, :2], -limit, limit) * _ONE).astype(np.int32)

    contours = np.zeros((h, w), np.uint8)
    cv2.polylines(contours, [fixed[c] for c in _CLOSED_CONTOURS], True, 255, int(thickness), cv2.LINE_AA, _SHIFT)
    cv2.polylines(contours, [fixed[c] for c in _OPEN_CONTOURS], False, 255, int(thickness), cv2.LINE_AA, _SHIFT)

    regions = np.zeros((h, w), np.uint8)
    cv2.fillPoly(regions, [fixed[r] for r in _REGIONS], 255, cv2.LINE_AA, _SHIFT)

    irises = np.zeros((h, w), np.uint8)
    for iris, eye, upper, lower in _IRISES:
        # A closing eye hides its iris: fade it out over the last IRIS_FADE_PX of lid gap, so a
        # closed eye (whose filled outline is still a thin antialiased line) shows none.
        gap = pts[upper, :2] - pts[lower, :2]
        gap_px = float(np.sqrt((gap * gap).sum(1)).mean())  # = np.linalg.norm(gap, axis=1).mean(), as it computes it
        visible = min(gap_px / IRIS_FADE_PX, 1.0)
        if visible <= 0.0:
            continue
        disc = np.zeros((h, w), np.uint8)
        centre = pts[iris[0], :2]
        rim = pts[iris[1:], :2] - centre
        radius = float(np.sqrt((rim * rim).sum(1)).mean())
        cv2.circle(disc, tuple(int(v) for v in fixed[iris[0]]), int(round(radius * _ONE)), round(255 * visible),
                   -1, cv2.LINE_AA, _SHIFT)
        opening = np.zeros((h, w), np.uint8)
        cv2.fillPoly(opening, [fixed[eye]], 255, cv2.LINE_AA, _SHIFT)
        np.maximum(irises, np.minimum(disc, opening), out=irises)
    return cv2.merge([contours, regions, irises])
