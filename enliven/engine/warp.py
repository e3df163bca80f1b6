"""Dense backward warp from driven landmarks to the source crop: thin-plate spline + mouth interior.

The spline's coefficients are solved in numpy (a small dense system), evaluated on a coarse
grid with one float32 matmul and upsampled to a full remap table, so no per-pixel Python.
Control points: the face's warp landmarks, a ring around the head that follows the head's
rigid motion (hair and neck move with the head), and fixed anchors on the crop border
(background stays put); the spline fades between ring and border.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from . import topology as topo
from .errors import ShapeError
from .motion import umeyama


@dataclass(frozen=True)
class WarpConfig:
    grid_px: int = 64  # the spline is evaluated on grid_px x grid_px points, then upsampled
    border_anchors_per_side: int = 16  # fixed points along each side of the crop
    ring_points: int = 20  # points of the head ring
    ring_scale: float = 1.35  # ring radius relative to the face oval's, around the oval centre
    regularization: float = 1e-6  # spline smoothing (relative to the mean kernel value); >0 keeps it stable


def _tps_kernel(d2: np.ndarray) -> np.ndarray:
    """Thin-plate radial basis U = r^2 log r^2 from squared distances (0 at r = 0)."""
    return d2 * np.log(np.maximum(d2, 1e-12))


def solve_tps(dst: np.ndarray, src: np.ndarray, regularization: float = 1e-3) -> np.ndarray:
    """Coefficients of the 2-D thin-plate spline f with f(dst[i]) ~= src[i].

    Args: dst, src (N, 2) float, pixels. Returns (N + 3, 2) float64: N kernel weights then the
    affine part (constant, x, y).
    """
    if dst.shape != src.shape or dst.ndim != 2 or dst.shape[1] != 2:
        raise ShapeError(f"expected two (N, 2) arrays; got {dst.shape} and {src.shape}")
    n = len(dst)
    d = dst.astype(np.float64)
    d2 = ((d[:, None, :] - d[None, :, :]) ** 2).sum(-1)
    k = _tps_kernel(d2)
    k[np.diag_indices(n)] += regularization * max(float(np.abs(k).mean()), 1e-9)
    p = np.concatenate([np.ones((n, 1)), d], axis=1)
    a = np.zeros((n + 3, n + 3))
    a[:n, :n], a[:n, n:], a[n:, :n] = k, p, p.T
    b = np.zeros((n + 3, 2))
    b[:n] = src
    return np.linalg.solve(a, b)


def eval_tps(coef: np.ndarray, dst: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Evaluate the spline at ``points`` (M, 2); returns (M, 2) float32.

    The distance matrix is one float32 matmul (|q|^2 + |d|^2 - 2 q.d), the fast path.
    """
    q = points.astype(np.float32)
    c = dst.astype(np.float32)
    d2 = (q * q).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2.0 * (q @ c.T)
    np.maximum(d2, 0.0, out=d2)
    u = _tps_kernel(d2)
    w = coef.astype(np.float32)
    n = len(c)
    return u @ w[:n] + w[n] + q @ w[n + 1:]


def border_anchors(size_px: int, per_side: int) -> np.ndarray:
    """Fixed points along the crop's border (and its corners), (4 * per_side, 2) float64."""
    t = np.linspace(0, size_px - 1, per_side, endpoint=False)
    e = float(size_px - 1)
    return np.concatenate([np.stack([t, np.zeros_like(t)], 1), np.stack([np.full_like(t, e), t], 1),
                           np.stack([e - t, np.full_like(t, e)], 1), np.stack([np.zeros_like(t), e - t], 1)])


def head_ring(source_points: np.ndarray, count: int, scale: float) -> np.ndarray:
    """Points on an ellipse around the source face oval, (count, 2) float64 pixels.

    Semi-axes are ``scale`` times the oval's half width / half height, so the ring lies in
    the hair, ears and neck around the face.
    """
    oval = source_points[topo.FACE_OVAL, :2]
    center = (oval.max(0) + oval.min(0)) / 2
    half = (oval.max(0) - oval.min(0)) / 2 * scale
    a = np.linspace(0, 2 * np.pi, count, endpoint=False)
    return center + np.stack([np.cos(a), np.sin(a)], 1) * half


@dataclass
class Warper:
    """Backward warp for one source crop: precomputes what does not change per frame.

    Args: source_points (478, 3) source landmarks in crop pixels; size_px: crop side.
    """

    source_points: np.ndarray
    size_px: int
    config: WarpConfig = WarpConfig()

    def __post_init__(self) -> None:
        cfg = self.config
        self._src_face = self.source_points[topo.WARP_POINTS, :2].astype(np.float64)
        self._src_rigid = self.source_points[topo.RIGID, :2].astype(np.float64)
        self._src_ring = head_ring(self.source_points, cfg.ring_points, cfg.ring_scale)
        # Ring points that fall off the crop are dropped: the border anchors rule there.
        margin = 0.12 * self.size_px
        inside = np.all((self._src_ring > margin) & (self._src_ring < self.size_px - 1 - margin), axis=1)
        self._src_ring = self._src_ring[inside]
        self._border = border_anchors(self.size_px, cfg.border_anchors_per_side)
        g = cfg.grid_px
        if self.size_px % g:
            raise ValueError(f"crop size {self.size_px} must be a multiple of the warp grid {g}")
        # Grid sample j lands on output pixel (j + 0.5) * size / g - 0.5 under cv2.resize's pixel-centre
        # rule. One extra sample on each side (j = -1 and g) keeps the border exact instead of clamped.
        self._cell = self.size_px // g
        ticks = (np.arange(-1, g + 1) + 0.5) * self._cell - 0.5
        gx, gy = np.meshgrid(ticks, ticks)
        self._grid = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
        self._src_all = np.concatenate([self._src_face, self._src_ring, self._border])

    def control_points(self, driven_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Destination and source control points (N, 2) for driven landmarks (478, 3) in crop pixels."""
        drv_face = driven_points[topo.WARP_POINTS, :2].astype(np.float64)
        rot, t, s = umeyama(self._src_rigid, driven_points[topo.RIGID, :2].astype(np.float64))
        drv_ring = s * self._src_ring @ rot.T + t
        dst = np.concatenate([drv_face, drv_ring, self._border])
        return dst, self._src_all

    def flow(self, driven_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Remap tables (map_x, map_y), each (size, size) float32: output pixel -> source pixel."""
        if driven_points.shape != (topo.NUM_LANDMARKS, 3):
            raise ShapeError(f"expected driven points (478, 3); got {driven_points.shape}")
        dst, src = self.control_points(driven_points)
        coef = solve_tps(dst, src, self.config.regularization)
        g, c, s = self.config.grid_px + 2, self._cell, self.size_px
        coarse = eval_tps(coef, dst, self._grid).reshape(g, g, 2)
        full = cv2.resize(coarse, (g * c, g * c), interpolation=cv2.INTER_LINEAR)[c:c + s, c:c + s]
        return np.ascontiguousarray(full[..., 0]), np.ascontiguousarray(full[..., 1])

    def warp(self, source_crop: np.ndarray, driven_points: np.ndarray) -> np.ndarray:
        """The source crop (S, S, 3) uint8 moved to the driven landmarks; returns (S, S, 3) uint8."""
        map_x, map_y = self.flow(driven_points)
        return cv2.remap(source_crop, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def inner_mouth_mask(points: np.ndarray, size_px: int) -> np.ndarray:
    """Antialiased mask (S, S) float32 in [0, 1] of the polygon inside the inner lips."""
    mask = np.zeros((size_px, size_px), np.uint8)
    poly = np.round(points[topo.LIPS_INNER, :2] * 16).astype(np.int32)
    cv2.fillPoly(mask, [poly], 255, lineType=cv2.LINE_AA, shift=4)
    return mask.astype(np.float32) / 255.0


def fill_mouth_interior(frame: np.ndarray, driven_points: np.ndarray, source_points: np.ndarray,
                        lip_color: np.ndarray) -> np.ndarray:
    """Paint a dark mouth interior where the driven mouth opens beyond the source's own opening.

    A backward warp can only stretch the lips' own texture into a newly opened mouth (vertical
    streaks); a shaded dark cavity reads as an open mouth. Where the source mouth is itself
    open, its warped interior (teeth, tongue) is kept in proportion.
    Args: frame (S, S, 3) uint8 warped crop (modified in place and returned); driven_points,
    source_points (478, 3) crop pixels; lip_color (3,) float, mean RGB of the source lips.
    """
    opening_now = topo.mouth_opening(driven_points)
    if opening_now < 0.02:
        return frame
    new = np.clip(1.0 - topo.mouth_opening(source_points) / opening_now, 0.0, 1.0)
    if new <= 0.0:
        return frame
    size = frame.shape[0]
    pts = driven_points[topo.LIPS_INNER, :2]
    x0, y0 = np.floor(pts.min(0)).astype(int) - 2
    x1, y1 = np.ceil(pts.max(0)).astype(int) + 3
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
    if x1 <= x0 or y1 <= y0:
        return frame
    mask = inner_mouth_mask(driven_points, size)[y0:y1, x0:x1]
    # Shading: darkest in the middle, a little light near the upper teeth and the tongue below.
    upper_y = driven_points[topo.LIPS_INNER_UPPER, 1].mean()
    lower_y = driven_points[topo.LIPS_INNER_LOWER, 1].mean()
    v = (np.arange(y0, y1, dtype=np.float32)[:, None] - upper_y) / max(lower_y - upper_y, 1.0)
    v = np.clip(v, 0.0, 1.0)
    dark = np.asarray(lip_color, np.float32) * 0.12
    tongue = np.asarray(lip_color, np.float32) * 0.45
    teeth_shadow = np.array([70.0, 62.0, 60.0], np.float32)
    upper_w = np.clip(1.0 - v / 0.18, 0.0, 1.0) * 0.5
    lower_w = np.clip((v - 0.6) / 0.4, 0.0, 1.0) * 0.6
    color = dark + upper_w[..., None] * (teeth_shadow - dark) + lower_w[..., None] * (tongue - dark)
    alpha = (mask * new)[..., None]
    patch = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = np.clip(patch * (1 - alpha) + color * alpha, 0, 255).astype(np.uint8)
    return frame


def lip_color(crop: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Mean RGB (3,) float32 of the lips (between outer and inner contours) in a crop."""
    mask = np.zeros(crop.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(points[topo.LIPS_OUTER, :2]).astype(np.int32)], 1)
    cv2.fillPoly(mask, [np.round(points[topo.LIPS_INNER, :2]).astype(np.int32)], 0)
    if mask.sum() < 4:
        return np.array([150.0, 80.0, 80.0], np.float32)
    return crop[mask.astype(bool)].mean(axis=0).astype(np.float32)
