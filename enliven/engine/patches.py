"""Eye and mouth patches: small refiners at higher resolution, cut from the crop where a region needs it.

The face refiner runs at 128 px, so lids, lashes and teeth stay soft (at 512 most, but at 256 too). Patches
were trained on 512 crops; at 256 an eye patch is the crop's eye upsampled twofold, and still refines it
(val, blink frames: eye L1 -16 % at 256, -17 % at 512 over the face refiner alone). A patch refiner sees one
region at its own resolution: a square patch aligned to the driven landmarks (a similarity: centred on
the region, turned with the line of its corners, scaled to the region's width), cut from the refined
crop by ``cv2.warpAffine``. It predicts a residual and a bounded mask like the face refiner; its delta
is faded to zero towards the patch border (``patch_gate``) and pasted back through the inverse
transform, so the patch leaves no seam. Patches run only when the region needs them
(``needs_patch``: an eye closing, a mouth opening beyond the photo's).

Torch-free, like ``refine.py``: the patch models are ``runtime.Model`` objects (ONNX Runtime or torch)

    patch model: warped (N, 3, P, P), source (N, 3, P, P), drawing (N, 3, P, P), gate (N, 1, P, P)
                 -> delta (N, 3, P, P) image units, mask (N, 1, P, P)

``source`` is the same region of the photo's crop, aligned by the photo's own landmarks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import cv2
import numpy as np

from . import topology as topo
from .refine import interleaved, limit_chroma, nchw
from .render import draw_landmarks
from .runtime import Model

PatchKind = Literal["right_eye", "left_eye", "mouth"]
PATCH_KINDS: tuple[PatchKind, ...] = ("right_eye", "left_eye", "mouth")
PATCH_INPUTS, PATCH_OUTPUTS = ("warped", "source", "drawing", "gate"), ("delta", "mask")
# Patch side over the region's corner-to-corner width: eyes with their lids and some brow, the mouth with its lips.
PATCH_SPAN = {"right_eye": 2.0, "left_eye": 2.0, "mouth": 1.7}
GATE_MARGIN = 0.12  # the gate is 0 within this fraction of the side from the border, 1 well inside
EYE_CLOSING = 0.75  # an eye needs its patch when its lid gap is below this fraction of the photo's
MOUTH_OPENING = 0.08  # the mouth needs its patch when it opens this much wider than the photo's (interocular units)

_CORNERS = {"right_eye": (topo.RIGHT_EYE_OUTER, topo.RIGHT_EYE_INNER),
            "left_eye": (topo.LEFT_EYE_INNER, topo.LEFT_EYE_OUTER),
            "mouth": (topo.MOUTH_RIGHT_CORNER, topo.MOUTH_LEFT_CORNER)}
_REGION = {"right_eye": topo.RIGHT_EYE, "left_eye": topo.LEFT_EYE, "mouth": topo.LIPS_OUTER}


@dataclass(frozen=True)
class PatchTransform:
    """Crop pixels -> patch pixels: a similarity (2, 3) and its inverse, for a square patch of ``side_px``."""

    matrix: np.ndarray  # (2, 3) float64, crop -> patch
    inverse: np.ndarray  # (2, 3) float64, patch -> crop
    side_px: int

    def to_patch(self, points: np.ndarray) -> np.ndarray:
        """Points (..., 2|3) crop pixels -> (..., 2) patch pixels."""
        p = np.asarray(points, np.float64)[..., :2]
        return p @ self.matrix[:, :2].T + self.matrix[:, 2]

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Points (..., 2) patch pixels -> (..., 2) crop pixels."""
        p = np.asarray(points, np.float64)[..., :2]
        return p @ self.inverse[:, :2].T + self.inverse[:, 2]


def patch_transform(points: np.ndarray, kind: PatchKind, side_px: int) -> PatchTransform:
    """The patch of region ``kind`` for landmarks (478, 2|3) in crop pixels.

    Centred on the region's contour, its x axis along the line from the subject's right corner to the
    left one (so a tilted head gives an upright patch), its side PATCH_SPAN x the corner distance.
    Pixel centres: patch pixel (side - 1) / 2 is the region's centre.
    """
    pts = np.asarray(points, np.float64)[:, :2]
    a, b = pts[_CORNERS[kind][0]], pts[_CORNERS[kind][1]]
    centre = pts[_REGION[kind]].mean(axis=0)
    span = b - a
    width = max(float(np.linalg.norm(span)), 1e-6)
    cos, sin = span / width
    scale = side_px / (PATCH_SPAN[kind] * width)  # patch pixels per crop pixel
    rot = np.array([[cos, sin], [-sin, cos]]) * scale  # rotates the corner line onto +x
    c = (side_px - 1) / 2.0
    m = np.concatenate([rot, (np.array([c, c]) - rot @ centre)[:, None]], axis=1)
    return PatchTransform(m, cv2.invertAffineTransform(m), side_px)


def extract(image: np.ndarray, t: PatchTransform) -> np.ndarray:
    """The patch (P, P, C) of ``image`` (S, S, C), bilinear, edges replicated."""
    return cv2.warpAffine(image, t.matrix, (t.side_px, t.side_px), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def patch_gate(side_px: int) -> np.ndarray:
    """(P, P) float32 in [0, 1]: 0 at the border (within GATE_MARGIN of the side), rising smoothly to 1 inside."""
    t = (np.arange(side_px) + 0.5) / side_px
    edge = np.minimum(t, 1 - t) / GATE_MARGIN - 0.5
    ramp = np.clip(edge, 0.0, 1.0)
    ramp = ramp * ramp * (3 - 2 * ramp)
    return np.outer(ramp, ramp).astype(np.float32)


def paste_delta(crop: np.ndarray, delta: np.ndarray, t: PatchTransform) -> np.ndarray:
    """Add a patch's delta (P, P, 3) float32 image units, mapped back to the crop, to ``crop`` (S, S, 3) uint8.

    Only the patch's bounding box is touched; the delta is expected to be 0 at the patch border (gated),
    so the result has no step there. Returns a new uint8 crop.
    """
    s = crop.shape[0]
    corners = t.to_crop(np.array([[0, 0], [t.side_px - 1, 0], [0, t.side_px - 1], [t.side_px - 1, t.side_px - 1]]))
    x0, y0 = np.clip(np.floor(corners.min(0)).astype(int) - 1, 0, s)
    x1, y1 = np.clip(np.ceil(corners.max(0)).astype(int) + 2, 0, s)
    out = crop.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    m = t.matrix.copy()
    m[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)  # box pixel (u, v) = crop pixel (x0 + u, y0 + v)
    # patch -> box: warpAffine with the inverse map of box -> patch (WARP_INVERSE_MAP), zero outside the patch
    d = cv2.warpAffine(interleaved(np.asarray(delta, np.float32)), m, (x1 - x0, y1 - y0),
                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    box = out[y0:y1, x0:x1].astype(np.float32) + d * 255.0
    out[y0:y1, x0:x1] = np.clip(box + 0.5, 0, 255).astype(np.uint8)
    return out


def region_openings(kinds: tuple[PatchKind, ...], points: np.ndarray) -> dict[PatchKind, float]:
    """What ``needs_patch`` compares, per region of ``kinds``: the eye's ``topology.eye_opening`` or the
    ``topology.mouth_opening`` of landmarks (478, 2|3); both eyes' from one ``eye_opening``."""
    out: dict[PatchKind, float] = {}
    if "right_eye" in kinds or "left_eye" in kinds:
        out["right_eye"], out["left_eye"] = topo.eye_opening(points)
    if "mouth" in kinds:
        out["mouth"] = topo.mouth_opening(points)
    return out


def opening_needs_patch(kind: PatchKind, driven: float, source: float) -> bool:
    """``needs_patch`` from the region's openings (``region_openings``) of the driven and the photo's landmarks."""
    if kind == "mouth":
        return driven > source + MOUTH_OPENING
    return driven < EYE_CLOSING * max(source, 1e-6)


def needs_patch(kind: PatchKind, driven: np.ndarray, source: np.ndarray) -> bool:
    """Whether region ``kind`` of the driven landmarks differs enough from the photo's to need its refiner."""
    return opening_needs_patch(kind, region_openings((kind,), driven)[kind], region_openings((kind,), source)[kind])


class PatchInputs(NamedTuple):
    """One patch's inputs, numpy HWC."""

    warped: np.ndarray  # (P, P, 3) uint8, from the (refined) crop
    source: np.ndarray  # (P, P, 3) uint8, the same region of the photo's crop
    drawing: np.ndarray  # (P, P, 3) uint8, the driven landmarks drawn in patch pixels
    gate: np.ndarray  # (P, P) float32
    transform: PatchTransform  # crop -> patch of the driven landmarks


def patch_inputs(crop: np.ndarray, driven: np.ndarray, source_crop: np.ndarray, source_points: np.ndarray,
                 kind: PatchKind, side_px: int) -> PatchInputs:
    """Cut the patch of ``kind`` from a crop (S, S, 3) uint8 with driven landmarks (478, 3), and its source twin."""
    t = patch_transform(driven, kind, side_px)
    ts = patch_transform(source_points, kind, side_px)
    pts = np.concatenate([t.to_patch(driven), np.zeros((len(driven), 1))], axis=1)
    return PatchInputs(extract(crop, t), extract(source_crop, ts), draw_landmarks(pts, side_px), patch_gate(side_px), t)


def patch_feed(inputs: list[PatchInputs]) -> dict[str, np.ndarray]:
    """Stack patch inputs into one model batch (float32 NCHW)."""
    return {"warped": np.concatenate([nchw(i.warped) for i in inputs]),
            "source": np.concatenate([nchw(i.source) for i in inputs]),
            "drawing": np.concatenate([nchw(i.drawing) for i in inputs]),
            "gate": np.concatenate([nchw(i.gate) for i in inputs])}


@dataclass
class PatchRunner:
    """Runs the eye and mouth patch refiners on a refined crop, where the regions need them.

    ``eye`` and ``mouth``: runtime Models with PATCH_INPUTS / PATCH_OUTPUTS (None: that region is skipped).
    """

    eye: Model | None
    mouth: Model | None
    eye_px: int = 64
    mouth_px: int = 96
    # The photo's region_openings, measured once: (its source_points, the openings).
    _source_openings: tuple[np.ndarray, dict[PatchKind, float]] | None = field(default=None, init=False, repr=False)

    def refine(self, crop: np.ndarray, driven: np.ndarray, source_crop: np.ndarray,
               source_points: np.ndarray, chroma: float | None = None) -> np.ndarray:
        """The crop (S, S, 3) uint8 with the needed patches refined; returns a new array (or ``crop``).

        Both eyes go through the eye model in one batch; patches do not overlap, so all are cut from ``crop``.
        ``chroma``: the photo's ``refine.chroma_budget``: the patches may add no more colour than the photo
        has, as the face refiner may not (None: no cap).
        """
        out = crop
        regions = tuple(k for k in PATCH_KINDS if (self.mouth if k == "mouth" else self.eye) is not None)
        drv, src = region_openings(regions, driven), self._photo_openings(regions, source_points)
        for model, side, kinds in ((self.eye, self.eye_px, ("right_eye", "left_eye")),
                                   (self.mouth, self.mouth_px, ("mouth",))):
            needed = [k for k in kinds if model is not None and opening_needs_patch(k, drv[k], src[k])]
            if not needed:
                continue
            inputs = [patch_inputs(crop, driven, source_crop, source_points, k, side) for k in needed]
            deltas = model(**patch_feed(inputs))["delta"]  # type: ignore[misc]
            for inp, delta in zip(inputs, deltas):
                hwc = delta.transpose(1, 2, 0)
                if chroma is not None:
                    hwc = limit_chroma(np.array(hwc, np.float32), chroma)
                out = paste_delta(out, hwc, inp.transform)
        return out

    def _photo_openings(self, regions: tuple[PatchKind, ...], source_points: np.ndarray) -> dict[PatchKind, float]:
        """``region_openings`` of the photo's landmarks, measured again only when another photo's come."""
        cached = self._source_openings
        if cached is None or cached[0] is not source_points or not set(regions) <= cached[1].keys():
            cached = self._source_openings = (source_points, region_openings(regions, source_points))
        return cached[1]
