"""Gaze in the warp: the irises slide within the eye openings as rigid discs.

A thin-plate spline pulled at the iris centre moves the iris like a rubber patch: its middle goes
where it is told, its rim stays behind, and MediaPipe sees about a third of the move. Inside each
driven eye opening the remap table is replaced by a radial map about the iris instead:

    output pixel at angle a, distance r from the driven iris centre
      r <= iris radius R:  source pixel at angle a, distance r from the source iris centre (the disc, rigid)
      R < r <= lid:        source distance R + (r - R) * (source reach - R) / (driven reach - R)
                           (the white between iris and lids stretched or squeezed along the ray)

where "reach" is the distance from the iris centre to the eye's contour along that ray. Samples stay
inside the source's own opening, so a moved iris never carries the photo's lashes with it; just past
the lids the map continues outwards 1:1 and fades into the spline, which holds the lid line too.
Where the photo shows no white beside its iris (the lids touch the iris above and below), the white
uncovered by a moved iris is taken from the nearest direction that has some, not stretched out of
the lid's margin.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import topology as topo

GAZE_RAYS = 72  # directions in which an eye opening's reach around the iris is measured
EYE_FADE_PX_AT_256 = 1.0  # the gaze map fades into the spline over this many pixels past the lids (crop of 256)
CLOSED_LID_RATIO = 0.35  # at this lid gap (of the source's) and below, the eye is shut: the spline alone
OPEN_LID_RATIO = 0.7  # from this lid gap on, the gaze map fully
MIN_WHITE = 0.35  # white of the eye beside the iris, in iris radii, that a ray needs to lend it to the uncovered part


def smoothstep(x: np.ndarray | float) -> np.ndarray:
    x = np.minimum(np.maximum(x, 0.0), 1.0)  # np.clip, without its ~4 us of Python dispatch
    return x * x * (3 - 2 * x)


def lid_gap(points: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> float:
    """Mean distance between paired upper and lower eyelid points, in the units of ``points`` (478, D)."""
    d = points[lower, :2] - points[upper, :2]
    return float(np.sqrt((d * d).sum(1)).mean())  # = np.linalg.norm(d, axis=1).mean(), as it computes it


def ray_directions(angles: np.ndarray) -> np.ndarray:
    """Unit vectors (A, 2) (cos, sin) of rays at ``angles`` (A,) radians."""
    return np.stack([np.cos(angles), np.sin(angles)], 1)


def ray_lengths(polygon: np.ndarray, angles: np.ndarray, directions: np.ndarray | None = None) -> np.ndarray:
    """Distance from the origin to a closed polygon (E, 2) along rays at ``angles`` (A,) radians; (A,) float64.

    The origin must be inside the polygon; each ray's nearest crossing counts (0 where a ray meets none).
    ``directions``: the rays' ``ray_directions``, when the caller keeps them (the same rays every frame).
    """
    d = ray_directions(angles) if directions is None else directions
    a = polygon
    e = np.concatenate([a[1:], a[:1]]) - a  # (E, 2) edges (= np.roll(a, -1, axis=0) - a)
    ax, ay, ex, ey = a[:, 0], a[:, 1], e[:, 0], e[:, 1]
    dx, dy = d[:, :1], d[:, 1:]  # (A, 1): against the (E,) rows, (A, E)
    cross_de = dx * ey - dy * ex
    ok = np.abs(cross_de) > 1e-12
    den = np.where(ok, cross_de, 1.0)
    t = (ax * ey - ay * ex) / den  # along the ray
    s = (ax * dy - ay * dx) / den  # along the edge
    t = np.where(ok & (t > 0) & (s >= -1e-9) & (s <= 1 + 1e-9), t, np.inf)
    out = t.min(axis=1)
    return np.where(np.isfinite(out), out, 0.0)


def inside_eye(centre: np.ndarray, contour: np.ndarray, upper: np.ndarray, radius: float) -> np.ndarray | None:
    """An iris centre (u, v) moved into the eye opening: at least half an iris radius from the corners along
    u, and within the middle 70 % of the opening across it. None when the opening is under a pixel there.

    Args: centre (2,), contour (16, 2) in the eye's (u, v) frame; upper (16,) bool, the upper lid's points;
    radius: the iris radius, same units.
    """
    lo, hi = float(contour[:, 0].min()), float(contour[:, 0].max())
    half = min(0.5 * radius, 0.45 * (hi - lo))
    u = min(max(float(centre[0]), lo + half), hi - half)  # clipped (as floats: small-array numpy costs more)

    def lid(points: np.ndarray) -> float:
        order = np.argsort(points[:, 0])
        return float(np.interp(u, points[order, 0], points[order, 1]))

    top, bottom = lid(contour[upper]), lid(contour[~upper])
    if bottom - top < 1.0:
        return None
    return np.array([u, min(max(float(centre[1]), top + 0.15 * (bottom - top)), bottom - 0.15 * (bottom - top))])


_EYES = ((topo.RIGHT_EYE, topo.RIGHT_EYE_UPPER, topo.RIGHT_EYE_LOWER, topo.RIGHT_IRIS),
         (topo.LEFT_EYE, topo.LEFT_EYE_UPPER, topo.LEFT_EYE_LOWER, topo.LEFT_IRIS))


@dataclass(frozen=True)
class SourceEye:
    """One eye of the source photo: its iris and how far its opening reaches around it."""

    contour: np.ndarray  # (16,) landmark indices of the eye's contour loop
    upper: np.ndarray  # (7,) upper-lid indices
    lower: np.ndarray  # (7,) lower-lid indices
    upper_mask: np.ndarray  # (16,) bool: which contour points are on the upper lid (corners count as lower)
    iris: int  # landmark index of the iris centre
    centre: np.ndarray  # (2,) iris centre, crop pixels (moved inside the opening if MediaPipe put it outside)
    axis: np.ndarray  # (2,) unit vector along the eye corners (image right)
    down: np.ndarray  # (2,) unit vector across them
    width: float  # corner distance, pixels
    radius: float  # iris radius, pixels
    gap: float  # mean lid gap, pixels
    reach: np.ndarray  # (GAZE_RAYS + 1,) distance from the iris centre to the contour along each ray, pixels
    white: np.ndarray  # (GAZE_RAYS + 1, 2) per ray, the unit direction (u, v) whose white the annulus shows
    white_reach: np.ndarray  # (GAZE_RAYS + 1,) the reach along that direction, pixels

    @classmethod
    def measure(cls, points: np.ndarray, k: int) -> "SourceEye":
        """Eye ``k`` (0: the subject's right, 1: left) of landmarks (478, 3) in crop pixels."""
        contour, upper, lower, iris = _EYES[k]
        mid, axis, down, width = topo.eye_frames(points)[k]
        basis = np.stack([axis, down])
        uv = (points[contour, :2].astype(np.float64) - mid) @ basis.T
        upper_mask = np.isin(contour, upper)
        radius = float(np.linalg.norm(points[iris[1:], :2] - points[iris[0], :2], axis=1).mean())
        centre = inside_eye((points[iris[0], :2] - mid) @ basis.T, uv, upper_mask, radius)
        if centre is None:  # a photo with closed eyes: no iris to move
            centre = uv.mean(0)
        angles = np.linspace(-np.pi, np.pi, GAZE_RAYS + 1)
        reach = ray_lengths(uv - centre, angles)
        white = _white_rays(angles, reach, radius)
        return cls(contour, upper, lower, upper_mask, int(iris[0]), mid + centre @ basis, axis, down, width, radius,
                   lid_gap(points, upper, lower), reach, np.stack([np.cos(angles[white]), np.sin(angles[white])], 1),
                   reach[white])


def _white_rays(angles: np.ndarray, reach: np.ndarray, radius: float) -> np.ndarray:
    """Per ray, the index of the nearest ray (by angle) with at least MIN_WHITE iris radii of white beyond the
    iris; itself when it has that much or when no ray has."""
    has = reach - radius >= MIN_WHITE * radius
    if not has.any():
        return np.arange(len(angles))
    gap = np.abs(np.angle(np.exp(1j * (angles[:, None] - angles[None, has]))))  # (A, K) angular distances
    return np.flatnonzero(has)[np.argmin(gap, axis=1)]


class GazeMap:
    """The radial iris map of one source crop (see the module's docstring).

    Args: source_points (478, 3) the source's landmarks in crop pixels; size_px: the crop's side.
    """

    def __init__(self, source_points: np.ndarray, size_px: int) -> None:
        self.size_px = size_px
        self.eyes = [SourceEye.measure(source_points, k) for k in range(2)]
        # The source's interocular distance: with the eye widths it gives the driven eye's scale across and along.
        self._src_iod = topo.interocular_distance(source_points)
        self._fade_px = EYE_FADE_PX_AT_256 * size_px / 256
        self._angles = np.linspace(-np.pi, np.pi, GAZE_RAYS + 1)
        self._directions = ray_directions(self._angles)

    def apply(self, table: np.ndarray, driven_points: np.ndarray) -> list[float]:
        """Write the iris map into the remap table (S, S, 2) float32 (output pixel -> source x, y), in place.

        Only pixels in and just around each driven eye opening change; an eye closing fades the map out
        (by its lid gap against the source's), so the spline alone closes the lids.
        Args: driven_points (478, 3) the driven landmarks in crop pixels (their irises say where to look).
        Returns each eye's weight (right, left), 0..1: how much the map replaced the spline (its fade by lid
        gap; the same as ``eyelids.gaze_weights``).
        """
        frames = topo.eye_frames(driven_points)
        size = topo.interocular_distance(driven_points) / max(self._src_iod, 1e-6)
        weights = []
        for eye, (mid, axis, down, width) in zip(self.eyes, frames, strict=True):
            ratio = lid_gap(driven_points, eye.upper, eye.lower) / max(eye.gap, 1e-6)
            w = float(smoothstep((ratio - CLOSED_LID_RATIO) / (OPEN_LID_RATIO - CLOSED_LID_RATIO)))
            weights.append(w)
            if w > 0.0:
                self._eye(table, driven_points, eye, mid, np.stack([axis, down]),
                          np.array([width / max(eye.width, 1e-6), size]), w)
        return weights

    def _eye(self, table: np.ndarray, driven_points: np.ndarray, eye: SourceEye, mid: np.ndarray,
             basis: np.ndarray, scale: np.ndarray, weight: float) -> None:
        """One eye: ``basis`` (2, 2) rows = the driven eye's u and v directions; ``scale`` (2,) driven pixels per
        source pixel along u and v; ``weight`` how much the map replaces the spline (0..1)."""
        contour = (driven_points[eye.contour, :2].astype(np.float64) - mid) @ basis.T  # (16, 2) driven u, v
        centre = inside_eye((driven_points[eye.iris, :2] - mid) @ basis.T, contour, eye.upper_mask,
                            eye.radius * scale[0])
        if centre is None:
            return
        reach = ray_lengths((contour - centre) / scale, self._angles, self._directions)  # in source pixels, per ray
        corners = driven_points[eye.contour, :2]
        x0, y0 = np.floor(corners.min(0) - self._fade_px).astype(int) - 1
        x1, y1 = np.ceil(corners.max(0) + self._fade_px).astype(int) + 2
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, self.size_px), min(y1, self.size_px)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return
        # Per pixel of the box, in source pixels about the iris: q = ((p - mid) @ basis.T - centre) / scale, as
        # outer sums of the box's columns and rows (the map is written per component: no (h, w, 2) temporaries).
        xs, ys = np.arange(x0, x1, dtype=np.float64) - mid[0], np.arange(y0, y1, dtype=np.float64) - mid[1]
        qx = (xs[None, :] * basis[0, 0] + ys[:, None] * basis[0, 1] - centre[0]) / scale[0]
        qy = (xs[None, :] * basis[1, 0] + ys[:, None] * basis[1, 1] - centre[1]) / scale[1]
        rho = np.hypot(qx, qy)
        theta = np.arctan2(qy, qx)
        cos, sin = np.cos(theta), np.sin(theta)
        r_drv = np.interp(theta, self._angles, reach)
        r_src = np.interp(theta, self._angles, eye.reach)
        # The disc: rigid; clipped to the source's opening (the rows a lid hides repeat the last seen one).
        rho_src = np.minimum(rho, np.maximum(r_src - 0.5, 0.0))  # = np.clip (as all clips here; rho >= 0)
        # The white between disc and lids: stretched along the ray, or, as far as the driven opening there is
        # wider than the source's, taken from the nearest ray that shows some white.
        # (The nearest ray's choice, not an interpolation: rays on either side of a lid may lend white from
        # opposite sides, and their average would point back into the lid.)
        f = smoothstep((r_drv - np.maximum(r_src, eye.radius)) / (0.5 * eye.radius))
        ray = np.rint((theta + np.pi) / (2 * np.pi) * GAZE_RAYS).astype(int)
        keep = 1 - f
        white_x = keep * cos + f * eye.white[:, 0][ray]  # (a column, then the rays: faster than white[ray, 0])
        white_y = keep * sin + f * eye.white[:, 1][ray]
        norm = np.maximum(np.hypot(white_x, white_y), 1e-9)
        white_reach = keep * r_src + f * eye.white_reach[ray]
        t = (rho - eye.radius) / np.maximum(r_drv - eye.radius, 1e-6)
        white_rho = np.minimum(np.maximum(eye.radius + t * (white_reach - eye.radius), 0.0),
                               np.maximum(white_reach - 0.5, 0.0))
        annulus = (rho > eye.radius) & (rho <= r_drv)
        rho_src = np.where(annulus, white_rho, rho_src)
        outside = rho > r_drv  # past the lids: past the source's, along the same ray
        rho_src = np.where(outside, r_src + (rho - r_drv), rho_src)
        dir_x = np.where(annulus, white_x / norm, cos)  # disc and outside: along the pixel's own ray
        dir_y = np.where(annulus, white_y / norm, sin)
        alpha = weight * np.minimum(np.maximum((r_drv + self._fade_px - rho) / self._fade_px, 0.0), 1.0)
        box = table[y0:y1, x0:x1]
        for k in range(2):
            sample = eye.centre[k] + rho_src * (dir_x * eye.axis[k] + dir_y * eye.down[k])
            box[..., k] += alpha * (sample.astype(np.float32) - box[..., k])
