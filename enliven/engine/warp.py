"""Dense backward warp from driven landmarks to the source crop: thin-plate spline + mouth interior.

The spline (tps.py) is solved in float64 (a small dense system) and evaluated in float32 on a
coarse grid (the border anchors' kernel columns there computed once per photo) and densely in
the eye and mouth boxes, then upsampled to a full remap table, so no per-pixel Python.
Control points: the face's warp landmarks, a ring around the head that follows the head's
rigid motion (hair and neck move with the head), and fixed anchors on the crop border
(background stays put); the spline fades between ring and border. Inside the eye openings a
radial map moves the irises (gaze.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from . import topology as topo
from .canonical import load_canonical
from .errors import ShapeError
from .eyelids import eye_frames, min_lid_gap_px, slide_lids
from .gaze import GazeMap
from .motion import Pose, fit_pose, unpose
from .runtime import single_thread_blas
from .tps import TpsEvaluator, TpsWorkspace, eval_tps, solve_tps

DEFAULT_LIP_RGB = (150.0, 80.0, 80.0)  # lip colour when the photo's lips are too thin to measure
WARP_VERSION = 6  # the default warp; bump when a change alters what the analytic output looks like
BORDER_WARP_VERSION = WARP_VERSION  # sliding lids, and the crop's edge gives way (WarpConfig() since 2026-11-30)
LID_SLIDE_WARP_VERSION = 5  # WarpConfig(border_release=False): sliding lids, the crop's edge fixed (step 7328's warp)
SQUASH_WARP_VERSION = 4  # WarpConfig(lid_slide=False): a closing eye is squashed (the step-7228 refiner's warp)


LID_STRETCH = (0.5,)  # where the lid control points lie on the way from the brow (0) to the lashes (1)


@dataclass(frozen=True)
class WarpConfig:
    grid_px: int = 64  # the spline is evaluated on grid_px x grid_px points, then upsampled
    border_anchors_per_side: int = 16  # fixed points along each side of the crop
    ring_points: int = 20  # points of the head ring
    ring_scale: float = 1.6  # ring radius relative to the face oval's, around the oval centre
    ring_depth: float = 0.6  # depth of the ring behind the face's rigid points, canonical units (hair, ears)
    regularization: float = 1e-6  # spline smoothing (relative to the mean kernel value); >0 keeps it stable
    # Self-occlusion: a face point that turns behind another (driven distance < fold_start x its source
    # distance, and deeper) is let go of gradually, fully at fold_end, instead of folding the image there.
    fold_start: float = 0.7
    fold_end: float = 0.35
    fold_release: float = 1.0  # regularization of a fully released point, relative to the mean kernel value
    # Border release: a border anchor that a moving control point (face or head ring) within border_start of
    # the crop side closes in on (its distance to the anchor below border_squeeze[0] of the source's) is let
    # go gradually, fully at border_squeeze[1], so a head leaning in or a jaw opening onto the crop's edge
    # pushes the background out of the crop instead of folding it against the fixed border (warp version 6).
    # It comes with the sliding lids: the squashing warp (lid_slide=False, version 4) keeps its fixed border.
    border_release: bool = True
    border_start: float = 0.1  # fraction of the crop side
    border_squeeze: tuple[float, float] = (0.5, 0.25)
    # Closing lids slide over a still eyeball (eyelids.py) instead of squashing the iris into a slit.
    # On by default since step 7328 was trained on it (warp version 5, then 6); False is version 4.
    lid_slide: bool = True

    @classmethod
    def of_version(cls, version: int) -> WarpConfig:
        """The default config of an analytic warp version (4, 5 or 6); ValueError for another."""
        configs = {SQUASH_WARP_VERSION: cls(lid_slide=False), LID_SLIDE_WARP_VERSION: cls(border_release=False),
                   BORDER_WARP_VERSION: cls()}
        if version not in configs:
            raise ValueError(f"warp version must be one of {sorted(configs)}; got {version}")
        return configs[version]

    @property
    def version(self) -> int:
        """The analytic warp version this config produces (what a refiner trained on it records)."""
        if not self.lid_slide:
            return SQUASH_WARP_VERSION
        return BORDER_WARP_VERSION if self.border_release else LID_SLIDE_WARP_VERSION

    @property
    def releases_border(self) -> bool:
        """Whether the border release runs: asked for, and with the sliding lids (versions 6, not 4)."""
        return self.border_release and self.lid_slide


def _box_samples(x0: int, y0: int, width: int, height: int, step: int) -> np.ndarray:
    """Where the spline is sampled for a pixel box: ((height // step + 2) * (width // step + 2), 2) float64.

    Sample j of the coarse grid lands on pixel (j + 0.5) * step - 0.5 under cv2.resize's
    pixel-centre rule; one extra sample on each side keeps the box's edges exact, not clamped.
    width and height must be multiples of step.
    """
    gw, gh = width // step + 2, height // step + 2
    tx = x0 + (np.arange(-1, gw - 1) + 0.5) * step - 0.5
    ty = y0 + (np.arange(-1, gh - 1) + 0.5) * step - 0.5
    out = np.empty((gh, gw, 2))
    out[..., 0], out[..., 1] = tx[None, :], ty[:, None]
    return out.reshape(-1, 2)


def _upsample_box(coarse: np.ndarray, width: int, height: int, step: int) -> np.ndarray:
    """The box's pixels (height, width, 2) float32 from its samples (height // step + 2, width // step + 2, 2)."""
    if step == 1:
        return coarse[1:-1, 1:-1]
    gh, gw = coarse.shape[:2]
    fine = cv2.resize(coarse, (gw * step, gh * step), interpolation=cv2.INTER_LINEAR)
    return fine[step:step + height, step:step + width]


_DETAIL_GROUPS = np.concatenate([topo.RIGHT_EYE, topo.LEFT_EYE, topo.LIPS_OUTER])  # the boxes' landmarks, in a row
_DETAIL_STARTS = np.cumsum([0, len(topo.RIGHT_EYE), len(topo.LEFT_EYE)])  # where each box's landmarks start


def _detail_boxes(points: np.ndarray, size_px: int, step: int = 1,
                  margin: float = 0.35) -> list[tuple[int, int, int, int]]:
    """Pixel boxes (x0, y0, x1, y1) around both eyes and the mouth, grown by ``margin`` of their size.

    Corners are multiples of ``step`` and boxes stay inside the crop.
    """
    # The three groups in one pass each (rows: right eye, left eye, mouth; columns x, y).
    xy = points[_DETAIL_GROUPS, :2]
    lo, hi = np.minimum.reduceat(xy, _DETAIL_STARTS), np.maximum.reduceat(xy, _DETAIL_STARTS)
    pad = margin * (hi - lo) + 2
    # Clipped to the crop (np.minimum/np.maximum: np.clip's dispatch costs more than these small arrays).
    first = (np.minimum(np.maximum(np.floor(lo - pad), 0), size_px) // step * step).astype(int).tolist()
    last = (np.minimum(np.maximum(np.ceil(hi + pad), 0), size_px) // step * step).astype(int).tolist()
    return [(x0, y0, x1, y1) for (x0, y0), (x1, y1) in zip(first, last) if x1 > x0 and y1 > y0]


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


@dataclass(frozen=True)
class MouthLayout:
    """Inner-mouth geometry of a driven frame, per inner-lip column (9 columns, right to left).

    The source's own interior is split along its middle: the upper teeth band runs from the
    upper lip down to ``upper_edge``, the lower band from ``lower_edge`` up to the lower lip.
    Where ``opens`` is True the driven mouth is wider than the source's and the gap between
    the edges is new cavity; elsewhere the edges meet.
    """

    upper_edge: np.ndarray  # (9, 2) float64, crop pixels
    lower_edge: np.ndarray  # (9, 2) float64, crop pixels
    opens: np.ndarray  # (9,) bool


@dataclass
class Warper:
    """Backward warp for one source crop: precomputes what does not change per frame.

    Args: source_points (478, 3) source landmarks in crop pixels; size_px: crop side.
    """

    source_points: np.ndarray
    size_px: int
    config: WarpConfig = WarpConfig()

    def __post_init__(self) -> None:
        single_thread_blas()
        cfg = self.config
        self._src_face = self.source_points[topo.WARP_POINTS, :2].astype(np.float64)
        self._canonical = load_canonical().points
        self._src_ring = head_ring(self.source_points, cfg.ring_points, cfg.ring_scale)
        # Ring points that fall off the crop are dropped: the border anchors rule there.
        margin = 0.18 * self.size_px
        inside = np.all((self._src_ring > margin) & (self._src_ring < self.size_px - 1 - margin), axis=1)
        self._src_ring = self._src_ring[inside]
        self._ring_canonical = self._lift(self._src_ring, fit_pose(self.source_points, self._canonical))
        self._border = border_anchors(self.size_px, cfg.border_anchors_per_side)
        if self.size_px % cfg.grid_px:
            raise ValueError(f"crop size {self.size_px} must be a multiple of the warp grid {cfg.grid_px}")
        self._cell = self.size_px // cfg.grid_px
        gw = self.size_px // self._cell + 2  # one extra sample on each side, as in _box_samples
        t = (np.arange(-1, gw - 1) + 0.5) * self._cell - 0.5
        gx, gy = np.meshgrid(t, t)
        # The spline's frame: centred on the crop, unit = half the crop (see tps.py); the border anchors never move.
        self._frame = (np.full(2, (self.size_px - 1) / 2), self.size_px / 2)
        self._grid = TpsEvaluator(np.stack([gx.ravel(), gy.ravel()], 1), *self._frame, fixed=self._border)
        self._detail_work = TpsWorkspace()
        self._fine = np.empty((gw * self._cell, gw * self._cell, 2), np.float32)
        self._detail_step = max(1, self.size_px // 128)
        self._src_all = np.concatenate([self._src_face, self._src_ring, self._border])
        # Each border anchor's distance to each face and ring point of the source (_release_border's reference).
        moving = self._src_all[:len(self._src_face) + len(self._src_ring)]
        self._border_src_dist = np.sqrt(((self._border[:, None, :] - moving[None, :, :]) ** 2).sum(-1))
        self._src_upper = self.source_points[topo.LIPS_INNER_UPPER, :2].astype(np.float64)
        self._src_lower = self.source_points[topo.LIPS_INNER_LOWER, :2].astype(np.float64)
        self._src_gap = np.linalg.norm(self._src_lower - self._src_upper, axis=1)
        self._src_mid = (self._src_upper + self._src_lower) / 2
        self._src_iod = topo.interocular_distance(self.source_points)
        self._fold_pairs = self._occlusion_pairs()
        self._src_lid_mid = self.lid_midpoints(self.source_points)
        self._src_eye_frames = eye_frames(self.source_points)
        self._gaze = GazeMap(self.source_points, self.size_px)

    def _occlusion_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pairs (i, j) of face control points that can fold onto each other, with their source distance.

        Eyes, irises and the inner lips are left out: lids and lips meet by design and have their
        own handling (minimum gaps, mouth layout). Pairs closer than a tenth of the interocular
        distance in the source are left out too (neighbours always move together).
        """
        skip = set(np.concatenate([topo.RIGHT_EYE, topo.LEFT_EYE, topo.LIPS_INNER]).tolist())
        idx = np.array([k for k, lm in enumerate(topo.WARP_POINTS) if lm not in skip])
        pts = self._src_face[idx]
        dist = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
        i, j = np.nonzero(np.triu(dist >= 0.1 * self._src_iod, 1))
        # The source face in the canonical frame, unit scale, so a rotation alone poses it like the driven head;
        # the pairs' source distances in the same units.
        src_pose = fit_pose(self.source_points, self._canonical)
        self._face_canonical = unpose(self.source_points, src_pose)[topo.WARP_POINTS]
        frontal = self._face_canonical @ src_pose.rotation.T
        src_canon = np.linalg.norm(frontal[idx[i], :2] - frontal[idx[j], :2], axis=1)
        self._pair_offsets = self._face_canonical[idx[i]] - self._face_canonical[idx[j]]  # (P, 3), i minus j
        # A squared distance bound (a hair above fold_start's) that ``release`` screens the pairs with.
        self._fold_bound = (self.config.fold_start * src_canon * (1 + 1e-6)) ** 2
        return idx[i], idx[j], src_canon

    def release(self, driven_points: np.ndarray, total: int, pose: Pose | None = None) -> np.ndarray:
        """Per control point (``total`` of them, face points first), how much to let it go, in [0, fold_release].

        A face point that the head's rotation brings much closer to another than in the source, and
        behind it, has turned out of sight: on a head turn the far cheek's outline slides onto the
        brow and the cheek. Holding it would squeeze centimetres of the source into a pixel (a fold
        with huge spline weights); released, the spline follows the visible points. Only the rigid
        head motion counts (the source shape posed like the driven head, scale normalised), so an
        opening jaw or a smile never releases anything. The release rises smoothly: nothing pops.
        ``pose``: the driven head's pose when the caller has fitted it already.
        """
        cfg = self.config
        out = np.zeros(total)
        i, j, src_d = self._fold_pairs
        pose = fit_pose(driven_points, self._canonical) if pose is None else pose
        # The pairs' offsets turned like the driven head (the source face posed so; one matmul for all pairs).
        turned = self._pair_offsets @ pose.rotation.T
        x, y = turned[:, 0], turned[:, 1]
        # The exact ratio only for the few pairs the cheaper squared distance leaves (np.hypot is ~5x dearer).
        near = np.flatnonzero(x * x + y * y < self._fold_bound)
        ratio = np.hypot(x[near], y[near]) / src_d[near]
        keep = ratio < cfg.fold_start
        if not keep.any():
            return out
        folding, ratio = near[keep], ratio[keep]
        i, j = i[folding], j[folding]
        behind = np.where(turned[folding, 2] > 0, i, j)  # deeper: larger z
        w = np.clip((cfg.fold_start - ratio) / (cfg.fold_start - cfg.fold_end), 0.0, 1.0)
        w = w * w * (3 - 2 * w)
        np.maximum.at(out, behind, w * cfg.fold_release)
        return out

    def _release_border(self, dst: np.ndarray, release: np.ndarray) -> None:
        """Let go of the border anchors that moving control points press against (into ``release``, in place).

        dst: the control points (face, ring, border, ...) of ``control_points``. Only face and ring points
        that come within ``border_start`` of the crop's side count; anchor j is released by a smoothstep of
        how much such a point has closed in on it, d_driven / d_source, from ``border_squeeze[0]`` down to
        fully at ``border_squeeze[1]``. A head that moves about the middle of the crop never closes in that
        far, so its frames warp exactly as before.
        """
        cfg = self.config
        if not cfg.releases_border:
            return
        s = self.size_px
        moving = len(self._src_face) + len(self._src_ring)
        pts = dst[:moving]
        edge = np.minimum(pts, s - 1 - pts).min(axis=1)  # distance to the nearest side (negative outside)
        near = np.flatnonzero(edge < cfg.border_start * s)
        if not len(near):
            return
        d_drv = np.sqrt(((self._border[:, None, :] - pts[None, near]) ** 2).sum(-1))
        ratio = (d_drv / np.maximum(self._border_src_dist[:, near], 1e-6)).min(axis=1)
        r0, r1 = cfg.border_squeeze
        w = np.clip((r0 - ratio) / (r0 - r1), 0.0, 1.0)
        w = w * w * (3 - 2 * w)
        anchors = release[moving:moving + len(self._border)]
        np.maximum(anchors, w * cfg.fold_release, out=anchors)

    def _lift(self, ring: np.ndarray, pose) -> np.ndarray:  # noqa: ANN001 (motion.Pose)
        """Canonical 3-D points (K, 3) that the pose projects onto ``ring`` (K, 2), at the ring's depth.

        The ring then turns with the head in 3-D: hair on the far side compresses as the face
        turns away, as the face's own points do, instead of sliding flat across the image.
        """
        a = pose.scale * pose.rotation[:2, :2]
        z = self.config.ring_depth
        rhs = ring - pose.translation[:2] - pose.scale * pose.rotation[:2, 2] * z
        xy = np.linalg.solve(a, rhs.T).T
        return np.concatenate([xy, np.full((len(ring), 1), z)], axis=1)

    def mouth(self, driven_points: np.ndarray) -> MouthLayout:
        """Where the teeth bands and the dark gap of the driven mouth lie (see MouthLayout)."""
        upper = driven_points[topo.LIPS_INNER_UPPER, :2].astype(np.float64)
        lower = driven_points[topo.LIPS_INNER_LOWER, :2].astype(np.float64)
        gap = lower - upper
        height = np.linalg.norm(gap, axis=1)
        # The source's interior, scaled to the driven face: what the source can show of its teeth.
        band = self._src_gap * topo.interocular_distance(driven_points) / max(self._src_iod, 1e-6)
        down = np.where(height[:, None] > 1e-6, gap / np.maximum(height, 1e-6)[:, None], [0.0, 1.0])
        opens = height > band + 1.0
        half = np.minimum(band, height) / 2
        return MouthLayout(upper + down * half[:, None], lower - down * half[:, None], opens)

    def control_points(self, driven_points: np.ndarray, pose: Pose | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Destination and source control points (N, 2) for driven landmarks (478, 3) in crop pixels.

        Inside the mouth, the source's interior is split along its middle: its upper half stays
        with the upper lip and its lower half with the lower lip (teeth stay on their jaws).
        Where the driven mouth opens wider than the source's, the seam between them is the gap
        that ``fill_mouth_gap`` paints; where it opens less, the lips alone squeeze the interior.
        ``pose``: the driven head's pose when the caller has fitted it already.
        """
        drv_face = driven_points[topo.WARP_POINTS, :2].astype(np.float64)
        pose = fit_pose(driven_points, self._canonical) if pose is None else pose
        drv_ring = (pose.scale * self._ring_canonical @ pose.rotation.T + pose.translation)[:, :2]
        m = self.mouth(driven_points)
        dst = [drv_face, drv_ring, self._border, m.upper_edge[m.opens], m.lower_edge[m.opens]]
        src = [self._src_all, self._src_mid[m.opens], self._src_mid[m.opens]]
        dst.append(self.lid_midpoints(driven_points))
        src.append(self._src_lid_mid)
        return np.concatenate(dst), np.concatenate(src)

    @staticmethod
    def lid_midpoints(points: np.ndarray) -> np.ndarray:
        """Points between each upper-lid point and the brow above it, (14 * len(LID_STRETCH), 2) float64 pixels.

        As control points they spread the lid skin evenly between brow and lashes when the eye
        closes; without them the spline keeps the skin under the brow and stretches one row of the
        source's eye (iris included) over the closed lid: a ghost of the iris on the lid.
        """
        out = []
        for upper, brow in ((topo.RIGHT_EYE_UPPER, topo.RIGHT_EYEBROW[:5]),  # the brows' lower contours
                            (topo.LEFT_EYE_UPPER, topo.LEFT_EYEBROW[:5])):
            lid = points[upper, :2].astype(np.float64)
            b = points[brow, :2].astype(np.float64)
            order = np.argsort(b[:, 0])
            brow_y = np.interp(lid[:, 0], b[order, 0], b[order, 1])
            for f in LID_STRETCH:
                out.append(np.stack([lid[:, 0], brow_y + f * (lid[:, 1] - brow_y)], 1))
        return np.concatenate(out)

    def flow(self, driven_points: np.ndarray, pose: Pose | None = None) -> np.ndarray:
        """The remap table (size, size, 2) float32: output pixel -> source pixel (x, y).

        Written into a buffer this Warper owns (valid until the next call), so no large array is
        allocated per frame: the coarse grid's kernel matrix, the upsampled grid and the map are reused.
        ``pose``: the driven head's pose when the caller has fitted it already.
        """
        if driven_points.shape != (topo.NUM_LANDMARKS, 3):
            raise ShapeError(f"expected driven points (478, 3); got {driven_points.shape}")
        pose = fit_pose(driven_points, self._canonical) if pose is None else pose  # shared by the two below
        dst, src = self.control_points(driven_points, pose)
        release = self.release(driven_points, len(dst), pose)
        self._release_border(dst, release)
        coef = solve_tps(dst, src, self.config.regularization, release)
        s, cell = self.size_px, self._cell
        gw = s // cell + 2
        fixed_at = len(self._src_face) + len(self._src_ring)  # dst = face, ring, border, ...
        coarse = self._grid.evaluate(coef, dst, fixed_at).reshape(gw, gw, 2)
        cv2.resize(coarse, (gw * cell, gw * cell), dst=self._fine, interpolation=cv2.INTER_LINEAR)
        full = self._fine[cell:cell + s, cell:cell + s]  # a view: the crop's pixels of the upsampled grid
        self._detail(full, coef, dst, driven_points)
        gaze = self._gaze.apply(full, driven_points)  # per eye, how much the iris map holds (eyelids.gaze_weights)
        if self.config.lid_slide:  # after the gaze map: lids slide over the eyeball it holds
            slide_lids(full, eye_frames(driven_points), self._src_eye_frames, min_lid_gap_px(driven_points),
                       self._src_iod, gaze)
        return full

    def _detail(self, full: np.ndarray, coef: np.ndarray, dst: np.ndarray, driven_points: np.ndarray) -> None:
        """Eyes and mouth move by a few pixels over a few pixels (gaze, lids, lips): the coarse grid would
        blur that, so there the spline is evaluated densely (every pixel at 128, 2 at 256...), into ``full``.

        The three boxes' samples go through the spline in one evaluation.
        """
        step = self._detail_step
        boxes = _detail_boxes(driven_points, self.size_px, step)
        if not boxes:
            return
        samples = [_box_samples(x0, y0, x1 - x0, y1 - y0, step) for x0, y0, x1, y1 in boxes]
        values = eval_tps(coef, dst, np.concatenate(samples), *self._frame, work=self._detail_work)
        start = 0
        for (x0, y0, x1, y1), points in zip(boxes, samples, strict=True):
            gh, gw = (y1 - y0) // step + 2, (x1 - x0) // step + 2
            coarse = values[start:start + len(points)].reshape(gh, gw, 2)
            start += len(points)
            full[y0:y1, x0:x1] = _upsample_box(coarse, x1 - x0, y1 - y0, step)

    def warp(self, source_crop: np.ndarray, driven_points: np.ndarray) -> np.ndarray:
        """The source crop (S, S, 3) uint8 moved to the driven landmarks; returns (S, S, 3) uint8."""
        return remap_source(source_crop, self.flow(driven_points))


def remap_source(source_crop: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """The source crop (S, S, 3) uint8 sampled through a remap table (S, S, 2) float32 (``Warper.flow``)."""
    return cv2.remap(source_crop, flow, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def inner_mouth_mask(points: np.ndarray, size_px: int) -> np.ndarray:
    """Antialiased mask (S, S) float32 in [0, 1] of the polygon inside the inner lips."""
    mask = np.zeros((size_px, size_px), np.uint8)
    poly = np.round(points[topo.LIPS_INNER, :2] * 16).astype(np.int32)
    cv2.fillPoly(mask, [poly], 255, lineType=cv2.LINE_AA, shift=4)
    return mask.astype(np.float32) / 255.0


def fill_mouth_gap(frame: np.ndarray, driven_points: np.ndarray, layout: MouthLayout,
                   lip_color: np.ndarray) -> np.ndarray:
    """Paint the dark cavity between the teeth bands where the driven mouth opens beyond the source's.

    A backward warp can only stretch what the source shows; into a newly opened mouth that is
    vertical streaks of lip texture. A shaded cavity (darkest in the middle, tongue-coloured
    low down) reads as an open mouth; the learned generator later replaces it with teeth.
    Args: frame (S, S, 3) uint8 warped crop, modified in place and returned; driven_points
    (478, 3) crop pixels; layout from ``Warper.mouth``; lip_color (3,) float mean RGB of the lips.
    """
    if not layout.opens.any():
        return frame
    size = frame.shape[0]
    right, left = driven_points[topo.LIPS_INNER[0], :2], driven_points[topo.LIPS_INNER[10], :2]
    top = np.where(layout.opens[:, None], layout.upper_edge, (layout.upper_edge + layout.lower_edge) / 2)
    bottom = np.where(layout.opens[:, None], layout.lower_edge, (layout.upper_edge + layout.lower_edge) / 2)
    poly = np.concatenate([[right], top, [left], bottom[::-1]])
    x0, y0 = np.floor(poly.min(0)).astype(int) - 2
    x1, y1 = np.ceil(poly.max(0)).astype(int) + 3
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
    if x1 <= x0 or y1 <= y0:
        return frame
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [np.round((poly - [x0, y0]) * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
    alpha = cv2.GaussianBlur(mask, (3, 3), 0).astype(np.float32)[..., None] / 255.0
    upper_y, lower_y = top[:, 1].mean(), bottom[:, 1].mean()
    v = (np.arange(y0, y1, dtype=np.float32)[:, None] - upper_y) / max(lower_y - upper_y, 1.0)
    v = np.clip(v, 0.0, 1.0)
    lip = np.asarray(lip_color, np.float32)
    dark = lip * 0.12
    tongue = lip * 0.5
    lower_w = np.clip((v - 0.55) / 0.45, 0.0, 1.0) ** 2 * 0.7
    color = dark + lower_w[..., None] * (tongue - dark)
    patch = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = np.clip(patch * (1 - alpha) + color * alpha, 0, 255).astype(np.uint8)
    return frame


def lip_color(crop: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Mean RGB (3,) float32 of the lips (between outer and inner contours) in a crop."""
    mask = np.zeros(crop.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(points[topo.LIPS_OUTER, :2]).astype(np.int32)], 1)
    cv2.fillPoly(mask, [np.round(points[topo.LIPS_INNER, :2]).astype(np.int32)], 0)
    if mask.sum() < 4:
        return np.array(DEFAULT_LIP_RGB, np.float32)
    return crop[mask.astype(bool)].mean(axis=0).astype(np.float32)
