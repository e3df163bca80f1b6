"""Pure quality measures: images against their ground truth, landmarks against landmarks.

Image measures take (H, W, 3) uint8 images and an optional (H, W) float mask in [0, 1] (pixel
weights, 0 = ignored); landmark measures take (478, 2|3) float arrays in pixels. The measures
that need a network (perceptual distance, dlib's identity, MediaPipe on an output) are in
``judges.py``. Each one is tested against values computed another way (tests/test_evaluate_metrics.py).
"""
from __future__ import annotations

import cv2
import numpy as np

from ..engine import topology as topo
from ..engine.canonical import angles_from_rotation, load_canonical
from ..engine.errors import EnlivenError
from ..engine.motion import FaceState

EXPRESSION_POINTS = np.unique(np.concatenate([topo.LIPS_OUTER, topo.LIPS_INNER, topo.RIGHT_EYE, topo.LEFT_EYE,
                                              topo.RIGHT_EYEBROW, topo.LEFT_EYEBROW]))


def _unit_float(img: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8 -> float64 in [0, 1]."""
    return np.asarray(img, np.float64) / 255.0


def checked_mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """(H, W) float64 pixel weights for an image of ``shape``: all ones when ``mask`` is None.

    Raises: EnlivenError if the mask's shape is not the image's (H, W).
    """
    m = np.ones(shape[:2]) if mask is None else np.asarray(mask, np.float64)
    if m.shape != shape[:2]:
        raise EnlivenError(f"mask shape {m.shape} does not match image shape {shape[:2]}")
    return m


def _masked_mean(per_pixel: np.ndarray, m: np.ndarray) -> float:
    """Weighted mean of an (H, W) map; 0 when the mask is empty."""
    return float((per_pixel * m).sum() / max(m.sum(), 1e-9))


def l1_error(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute difference in [0, 1] units over the masked pixels (mask weights, 0 = ignored)."""
    m = checked_mask(mask, a.shape)
    return _masked_mean(np.abs(_unit_float(a) - _unit_float(b)).mean(-1), m)


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, max_db: float = 100.0) -> float:
    """Peak signal-to-noise ratio in dB (peak 1) over the masked pixels; ``max_db`` for identical images."""
    m = checked_mask(mask, a.shape)
    mse = _masked_mean(((_unit_float(a) - _unit_float(b)) ** 2).mean(-1), m)
    return max_db if mse <= 10 ** (-max_db / 10) else float(-10 * np.log10(mse))


def _ssim_blur(z: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """SSIM (Gaussian window 11, sigma 1.5, per channel, then averaged) over the masked pixels."""
    m = checked_mask(mask, a.shape)
    x, y = _unit_float(a), _unit_float(b)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = _ssim_blur(x), _ssim_blur(y)
    sxx, syy, sxy = _ssim_blur(x * x) - mx * mx, _ssim_blur(y * y) - my * my, _ssim_blur(x * y) - mx * my
    smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return _masked_mean(smap.mean(-1), m)


def temporal_flicker(frames: list[np.ndarray], reference: list[np.ndarray] | None = None,
                     mask: np.ndarray | None = None) -> float:
    """Mean absolute frame-to-frame change (in [0, 1] units) beyond the reference's own change.

    With a reference (the ground truth), |(o_t - o_t-1) - (g_t - g_t-1)|; without, |o_t - o_t-1|.
    """
    if len(frames) < 2:
        return 0.0
    vals = []
    for t in range(1, len(frames)):
        d = _unit_float(frames[t]) - _unit_float(frames[t - 1])
        if reference is not None:
            d = d - (_unit_float(reference[t]) - _unit_float(reference[t - 1]))
        vals.append(_masked_mean(np.abs(d).mean(-1), checked_mask(mask, d.shape)))
    return float(np.mean(vals))


def _region_mask(outline: np.ndarray, size_px: int) -> np.ndarray:
    """(S, S) float64 in [0, 1]: the polygon ``outline`` (K, 2) pixels filled, antialiased (1/16 px)."""
    m = np.zeros((size_px, size_px), np.uint8)
    cv2.fillPoly(m, [np.round(outline * 16).astype(np.int32)], (255,), lineType=cv2.LINE_AA, shift=4)
    return m.astype(np.float64) / 255.0


def face_mask(points: np.ndarray, size_px: int) -> np.ndarray:
    """(S, S) float64 in [0, 1]: the face oval of landmarks (478, 2|3) in S pixels, antialiased."""
    return _region_mask(np.asarray(points)[topo.FACE_OVAL, :2], size_px)


def mouth_mask(points: np.ndarray, size_px: int, grow: float = 1.3) -> np.ndarray:
    """(S, S) float64: the outer lips grown ``grow`` about their centre."""
    p = np.asarray(points)[topo.LIPS_OUTER, :2]
    c = p.mean(0)
    return _region_mask(c + (p - c) * grow, size_px)


# --- landmarks ------------------------------------------------------------------------------------------------

def keypoint_distance(a: np.ndarray, b: np.ndarray) -> float:
    """AKD: mean Euclidean distance (pixels) between matching 2-D landmarks (478, 2|3) of two images."""
    return float(np.linalg.norm(np.asarray(a)[:, :2] - np.asarray(b)[:, :2], axis=1).mean())


def pose_free_shape(points: np.ndarray) -> np.ndarray:
    """(478, 3) float64: the landmarks (478, 3) with head pose and scale removed, canonical units."""
    return FaceState.measure(np.asarray(points, np.float64), load_canonical().points).shape


def expression_error(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance between the pose-free shapes of lips, eyes and brows, canonical units (interocular = 1)."""
    sa, sb = pose_free_shape(a), pose_free_shape(b)
    return float(np.linalg.norm(sa[EXPRESSION_POINTS] - sb[EXPRESSION_POINTS], axis=1).mean())


def head_angles(points: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) degrees of landmarks (478, 3)."""
    state = FaceState.measure(np.asarray(points, np.float64), load_canonical().points)
    return np.array(angles_from_rotation(state.pose.rotation))


def pose_change_error(output: np.ndarray, output_first: np.ndarray, driver: np.ndarray,
                      driver_first: np.ndarray) -> float:
    """Mean over (yaw, pitch, roll) of |the output's turn since its first frame - the driver's|, degrees.

    Args: landmarks (478, 3) pixels of the output now and at its first frame, of the driver now
    and at the driver's matching first frame.
    """
    turned_output = head_angles(output) - head_angles(output_first)
    turned_driver = head_angles(driver) - head_angles(driver_first)
    return float(np.abs(turned_output - turned_driver).mean())


def expression_change_error(output: np.ndarray, output_first: np.ndarray, driver: np.ndarray,
                            driver_first: np.ndarray) -> float:
    """Mean distance of lips, eyes and brows between the output's and the driver's change since their
    first frames, pose-free, canonical units (interocular = 1). Args as ``pose_change_error``."""
    change_output = pose_free_shape(output) - pose_free_shape(output_first)
    change_driver = pose_free_shape(driver) - pose_free_shape(driver_first)
    return float(np.linalg.norm((change_output - change_driver)[EXPRESSION_POINTS], axis=1).mean())
