"""Crop and align the face out of a photo, and paste the animated crop back into it."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from . import topology as topo

CROP_SCALE = 2.0  # crop side / face oval extent (the larger of width and height)
CROP_LIFT = 0.12  # crop centre raised above the oval centre by this fraction of the side (hair)


@dataclass(frozen=True)
class CropTransform:
    """Similarity photo -> crop: crop_xy = matrix @ [x, y, 1]; its inverse maps back."""

    matrix: np.ndarray  # (2, 3) float64, photo pixels -> crop pixels
    size_px: int  # crop side

    @property
    def inverse(self) -> np.ndarray:
        """(2, 3) float64, crop pixels -> photo pixels."""
        return cv2.invertAffineTransform(self.matrix)

    @property
    def scale(self) -> float:
        """Crop pixels per photo pixel."""
        return float(np.hypot(self.matrix[0, 0], self.matrix[1, 0]))

    def points_to_crop(self, points: np.ndarray) -> np.ndarray:
        """Landmarks (N, 3) photo pixels -> crop pixels (z scaled like x and y)."""
        out = points.astype(np.float64).copy()
        out[:, :2] = points[:, :2] @ self.matrix[:, :2].T + self.matrix[:, 2]
        out[:, 2] = points[:, 2] * self.scale
        return out


def crop_transform(points: np.ndarray, size_px: int) -> CropTransform:
    """Aligned square crop around a face: eyes level, face centred, hair included.

    Args: points (478, 3) photo pixels; size_px: crop side. The crop may run past the photo's
    edges: ``crop`` fills that with replicated edge pixels so the photo's edge does not bend.
    """
    right, left = topo.eye_centers(points[:, :2].astype(np.float64))
    angle = np.arctan2(left[1] - right[1], left[0] - right[0])
    c, s = np.cos(-angle), np.sin(-angle)
    rot = np.array([[c, -s], [s, c]])
    oval = points[topo.FACE_OVAL, :2].astype(np.float64) @ rot.T
    extent = float(np.max(oval.max(0) - oval.min(0)))
    center_rot = (oval.max(0) + oval.min(0)) / 2 - np.array([0.0, CROP_LIFT * CROP_SCALE * extent])
    scale = size_px / (CROP_SCALE * extent)
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = (size_px - 1) / 2 - scale * center_rot
    return CropTransform(m, size_px)


def crop(photo: np.ndarray, transform: CropTransform) -> np.ndarray:
    """The aligned crop (S, S, 3) uint8 of a photo (H, W, 3) uint8, edges replicated."""
    s = transform.size_px
    m = transform.matrix
    if transform.scale < 0.7:  # shrink with area averaging first: warpAffine alone would alias
        f = transform.scale / 0.7
        h, w = photo.shape[:2]
        small = cv2.resize(photo, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        fx, fy = small.shape[1] / w, small.shape[0] / h
        m = m @ np.array([[1 / fx, 0, 0.5 / fx - 0.5], [0, 1 / fy, 0.5 / fy - 0.5], [0, 0, 1]])
        photo = small
    return cv2.warpAffine(photo, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def feather_mask(size_px: int, margin_frac: float = 0.1) -> np.ndarray:
    """(S, S) float32 mask: 1 in the middle, a smooth ramp to 0 over ``margin_frac`` at the border."""
    ramp = np.clip((np.arange(size_px) + 0.5) / (margin_frac * size_px), 0.0, 1.0)
    ramp = np.minimum(ramp, ramp[::-1])
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep
    return np.outer(ramp, ramp).astype(np.float32)


class PasteBack:
    """Pastes animated crops back into one photo, touching only the crop's footprint.

    The footprint box, its blend weights and the photo's pixels there are computed once per
    photo; each frame then costs one warpAffine of the box and one blend.
    """

    def __init__(self, photo: np.ndarray, transform: CropTransform) -> None:
        h, w = photo.shape[:2]
        s = transform.size_px
        corners = np.array([[0, 0], [s, 0], [0, s], [s, s]], np.float64) @ transform.inverse[:, :2].T
        corners += transform.inverse[:, 2]
        x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, [w, h])
        self.box = (int(x0), int(y0), int(x1), int(y1))
        self._photo = photo
        # crop -> box coordinates
        self._to_box = transform.inverse.copy()
        self._to_box[:, 2] -= (x0, y0)
        self._size = (int(x1 - x0), int(y1 - y0))
        weights = cv2.warpAffine(feather_mask(s), self._to_box, self._size, flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        self._w_crop = np.ascontiguousarray(weights, dtype=np.float32)
        self._w_photo = np.ascontiguousarray(1.0 - weights, dtype=np.float32)
        self._background = np.ascontiguousarray(photo[y0:y1, x0:x1])

    def __call__(self, crop_frame: np.ndarray) -> np.ndarray:
        """The photo (H, W, 3) uint8 with ``crop_frame`` (S, S, 3) uint8 pasted in; a new array."""
        x0, y0, x1, y1 = self.box
        out = self._photo.copy()
        if x1 <= x0 or y1 <= y0:
            return out
        placed = cv2.warpAffine(crop_frame, self._to_box, self._size, flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
        out[y0:y1, x0:x1] = cv2.blendLinear(placed, self._background, self._w_crop, self._w_photo)
        return out
