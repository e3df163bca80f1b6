"""Shading that turns with the head: the photo's light, estimated once, re-applied as the face turns.

A warp carries the photo's shading along with the skin, so a cheek that turns towards the light keeps the
darkness it had in the photo. Under a Lambertian model with first-order lighting the skin's brightness is
albedo x (a + b . n), n the surface normal in the camera frame. ``fit_light`` fits a and b once per photo on
its skin, and each output pixel p is scaled by the change of that shading as the head turns:

    ratio(p) = 1 + k . (R n(q) - n(q)),   k = strength * b / (the skin's mean brightness),

q the photo pixel the warp's map takes p from, n(q) the photo's normal there (rasterised once from the
landmarks' mesh), R the driven head's rotation relative to the photo's. One scalar per pixel for the three
channels, so a grey photo stays grey; R = I (the photo's own pose) gives a ratio of exactly 1, so a still
driver stays still. The ratio fades to 1 across the face's outline: neck, hair and background are left alone.

Images are (S, S, 3) uint8 RGB; landmarks (478, 3) float crop pixels (z scaled like x and y, smaller = nearer).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import cv2
import numpy as np

from . import topology as topo
from .canonical import load_canonical
from .motion import Pose, fit_pose

FIELD_SCALE = 2  # the photo's normal field is rasterised at S / FIELD_SCALE (it is smooth)


@dataclass(frozen=True)
class LightConfig:
    strength: float = 0.8  # share of the fitted light's change applied (set on train clips: 0.7-0.9 alike)
    ratio_limits: tuple[float, float] = (0.8, 1.25)  # no pixel is darkened or brightened beyond these
    skin_erode: float = 0.03  # the fit's skin: the face oval shrunk by this fraction of the side...
    feature_grow: float = 1.4  # ... without the eyes, brows and lips grown by this factor about their centres
    fade: float = 0.03  # the ratio fades to 1 over this fraction of the side across the face outline
    grid: int = 4  # the ratio is computed at S / grid and upsampled (it is smooth)
    min_brightness: float = 20.0  # skin darker than this on average (0-255 levels): no usable fit, no relight

    def __post_init__(self) -> None:
        lo, hi = self.ratio_limits
        if not (self.strength >= 0 and 0 < lo <= 1 <= hi and self.grid >= 1):
            raise ValueError(f"invalid light config {self}")


@lru_cache(maxsize=1)
def mesh_triangles() -> np.ndarray:
    """(T, 3) int: a triangulation of the 478 landmarks (Delaunay of the canonical face seen from the front)."""
    xy = load_canonical().points[:, :2].astype(np.float64)
    xy = (xy - xy.min(0)) / np.ptp(xy, axis=0).max() * 1000.0 + 10.0  # Subdiv2D wants an integer bounding rect
    div = cv2.Subdiv2D((0, 0, 1020, 1020))
    for p in xy:
        div.insert((float(p[0]), float(p[1])))
    index = {(np.float32(x), np.float32(y)): i for i, (x, y) in enumerate(xy)}  # the list is float32
    tris = []
    for t in div.getTriangleList().reshape(-1, 3, 2):
        ids = [index.get((np.float32(x), np.float32(y))) for x, y in t]
        if None not in ids:  # triangles on Subdiv2D's outer virtual vertices are dropped
            tris.append(ids)
    return np.asarray(tris, np.int64)


def vertex_normals(points: np.ndarray) -> np.ndarray:
    """Unit normals (478, 3) float64 of the landmarks' mesh, turned towards the camera at the nose tip.

    Args: points (478, 3) with z scaled like x and y (as ``CropTransform.points_to_crop`` gives them).
    """
    p = points.astype(np.float64)
    tri = mesh_triangles()
    a, b, c = p[tri[:, 0]], p[tri[:, 1]], p[tri[:, 2]]
    face_n = np.cross(b - a, c - a)  # area-weighted
    n = np.zeros_like(p)
    for k in range(3):
        np.add.at(n, tri[:, k], face_n)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    return -n if n[topo.NOSE_TIP, 2] > 0 else n


def rasterize(points_2d: np.ndarray, values: np.ndarray, depth: np.ndarray, size_px: int) -> np.ndarray:
    """Linear interpolation of per-landmark ``values`` (478, C) over the mesh drawn at ``points_2d`` (478, 2).

    Nearer triangles (smaller mean ``depth``) are drawn last, so what is hidden in the image is overwritten.
    Returns (size_px, size_px, C) float32, 0 outside the mesh.
    """
    tri = mesh_triangles()
    out = np.zeros((size_px, size_px, values.shape[1]), np.float32)
    p = points_2d.astype(np.float64)
    for t in tri[np.argsort(-depth[tri].mean(1))]:
        (ax, ay), (bx, by), (cx, cy) = p[t]
        x0, y0 = max(int(np.floor(min(ax, bx, cx))), 0), max(int(np.floor(min(ay, by, cy))), 0)
        x1, y1 = min(int(np.ceil(max(ax, bx, cx))), size_px - 1), min(int(np.ceil(max(ay, by, cy))), size_px - 1)
        det = (by - cy) * (ax - cx) + (cx - bx) * (ay - cy)
        if x1 < x0 or y1 < y0 or abs(det) < 1e-9:
            continue
        ys, xs = np.mgrid[y0:y1 + 1, x0:x1 + 1]
        l1 = ((by - cy) * (xs - cx) + (cx - bx) * (ys - cy)) / det
        l2 = ((cy - ay) * (xs - cx) + (ax - cx) * (ys - cy)) / det
        l3 = 1.0 - l1 - l2
        inside = (l1 >= -1e-6) & (l2 >= -1e-6) & (l3 >= -1e-6)
        if inside.any():
            v = values[t]
            out[ys[inside], xs[inside]] = (l1[inside, None] * v[0] + l2[inside, None] * v[1] + l3[inside, None] * v[2])
    return out


def _polygon(points: np.ndarray, ids: np.ndarray, grow: float, size_px: int, scale: float) -> np.ndarray:
    p = points[ids, :2] / scale
    c = p.mean(0)
    mask = np.zeros((size_px, size_px), np.uint8)
    cv2.fillPoly(mask, [np.round(c + (p - c) * grow).astype(np.int32)], 1)
    return mask


def skin_mask(points: np.ndarray, size_px: int, config: LightConfig, scale: float = 1.0) -> np.ndarray:
    """(size_px, size_px) bool: the face oval shrunk by ``skin_erode``, without the eyes, brows and lips.

    ``points`` are in pixels of a side ``size_px * scale``.
    """
    face = _polygon(points, topo.FACE_OVAL, 1.0, size_px, scale)
    r = max(1, round(config.skin_erode * size_px))
    face = cv2.erode(face, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    for ids in (topo.RIGHT_EYE, topo.LEFT_EYE, topo.RIGHT_EYEBROW, topo.LEFT_EYEBROW, topo.LIPS_OUTER):
        face &= 1 - _polygon(points, ids, config.feature_grow, size_px, scale)
    return face.astype(bool)


class Light(NamedTuple):
    """First-order light of a photo: skin brightness ~ ambient + direction . n (0-255 levels)."""

    ambient: float
    direction: np.ndarray  # (3,) float64, camera frame (x right, y down, z away from the camera)
    skin_mean: float  # mean brightness of the skin pixels the fit kept


def fit_light(image: np.ndarray, normals: np.ndarray, skin: np.ndarray) -> Light | None:
    """The first-order light that fits the brightness (mean of R, G, B) of the ``skin`` pixels.

    Args: image (H, W, 3) uint8; normals (H, W, 3) float; skin (H, W) bool. Pixels off the fit by more
    than two standard deviations (freckles, stubble, a shadow's edge) are left out and the fit repeated.
    None when there are too few skin pixels to fit.
    """
    y = image[skin].astype(np.float64).mean(1)
    n = normals[skin].astype(np.float64)
    ok = np.linalg.norm(n, axis=1) > 0.5  # inside the mesh
    y, n = y[ok], n[ok]
    if len(y) < 50:
        return None
    a = np.concatenate([np.ones((len(y), 1)), n], 1)
    keep = np.ones(len(y), bool)
    light = np.zeros(4)
    for _ in range(3):
        light = np.linalg.lstsq(a[keep], y[keep], rcond=None)[0]
        resid = y - a @ light
        keep = np.abs(resid) < 2 * max(float(resid[keep].std()), 1e-6)
    return Light(float(light[0]), light[1:], float(y[keep].mean()))


class Relighter:
    """The photo's shading change for each driven frame. One per photo; ``apply`` per frame.

    Args: source_crop (S, S, 3) uint8 and source_points (478, 3) crop pixels of the photo.
    """

    def __init__(self, source_crop: np.ndarray, source_points: np.ndarray, config: LightConfig | None = None) -> None:
        self.config = cfg = config or LightConfig()
        size = source_crop.shape[0]
        self._canonical = load_canonical().points
        self._source_rotation = fit_pose(source_points, self._canonical).rotation
        half = max(size // FIELD_SCALE, 1)
        scale = size / half
        normals = rasterize(source_points[:, :2] / scale, vertex_normals(source_points), source_points[:, 2], half)
        small = cv2.resize(source_crop, (half, half), interpolation=cv2.INTER_AREA)
        self.light = light = fit_light(small, normals, skin_mask(source_points, half, cfg, scale))
        # Linearised about the skin's mean brightness: (a + b.Rn) / (a + b.n) ~ 1 + b.(Rn - n) / mean.
        usable = light is not None and light.skin_mean >= cfg.min_brightness
        self.k = cfg.strength * light.direction / light.skin_mean if usable else np.zeros(3)  # type: ignore[union-attr]
        # The photo's normals faded to 0 across the face outline: the ratio is 1 off the face.
        face = _polygon(source_points, topo.FACE_OVAL, 1.0, half, scale).astype(np.float32)
        sigma = max(cfg.fade * half, 0.5)
        fade = np.clip(2 * cv2.GaussianBlur(face, (0, 0), sigma) - 1, 0, 1)  # 0 on the outline, 1 well inside
        self._field = np.ascontiguousarray(normals * fade[..., None], np.float32)
        self._scale = scale

    @property
    def active(self) -> bool:
        """Whether the photo gave a usable light (otherwise ``apply`` returns its input unchanged)."""
        return bool(np.any(self.k))

    def ratio(self, flow: np.ndarray, driven_points: np.ndarray, pose: Pose | None = None) -> np.ndarray | None:
        """(S, S) float32 brightness ratio of the driven frame; None where it is 1 everywhere.

        Args: flow (S, S, 2) float32, the warp's map (output pixel -> photo pixel, ``Warper.flow``);
        driven_points (478, 3) crop pixels; pose: their head pose when the caller has fitted it already.
        """
        if not self.active:
            return None
        pose = fit_pose(driven_points, self._canonical) if pose is None else pose
        rel = pose.rotation @ self._source_rotation.T
        k = (rel - np.eye(3)).T @ self.k  # k . (R n - n) = ((R - I)^T k) . n
        if not np.any(np.abs(k) > 1e-9):
            return None
        size, g = flow.shape[0], self.config.grid
        small = cv2.resize(flow, (size // g, size // g), interpolation=cv2.INTER_LINEAR) / self._scale
        n = cv2.remap(self._field, small[..., 0], small[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                      borderValue=0)
        lo, hi = self.config.ratio_limits
        r = np.clip(1.0 + n @ k.astype(np.float32), lo, hi).astype(np.float32)
        return cv2.resize(r, (size, size), interpolation=cv2.INTER_LINEAR)

    def apply(self, frame: np.ndarray, flow: np.ndarray, driven_points: np.ndarray,
              pose: Pose | None = None) -> np.ndarray:
        """``frame`` (S, S, 3) uint8 with its brightness scaled by ``ratio`` (rounded); the frame itself when it is 1.

        Only the box where the ratio differs from 1 is multiplied (the face: a third of the crop or less).
        """
        r = self.ratio(flow, driven_points, pose)
        if r is None:
            return frame
        changed = r != 1.0
        rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
        if not len(rows):
            return frame
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        out = frame.copy()
        box = r[y0:y1, x0:x1]
        out[y0:y1, x0:x1] = cv2.multiply(frame[y0:y1, x0:x1], cv2.merge([box, box, box]), dtype=cv2.CV_8U)
        return out
