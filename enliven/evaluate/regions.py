"""Region and behaviour metrics: eyes on blink frames, mouths on open-mouth frames, colour, stillness.

What face-wide averages hide:
- **blink eye L1**: L1 over both eyes (each eye contour grown x1.6 about its centre, so lids, lashes
  and the lid skin count) on frames whose driver's lid gap is below ``BLINK_EYE_OPENING`` (mean of
  both eyes' ``topology.eye_opening``: lid gap / interocular distance; ~0.25-0.3 for open eyes,
  ~0.05 shut), so closing lids are judged where they close;
- **open-mouth L1**: L1 over the outer lips grown x1.3 on frames whose driver's
  ``topology.mouth_opening`` (inner-lip gap / interocular distance) is above ``OPEN_MOUTH``;
- **chroma**: the 99th percentile, inside the face, of |Cb - 128| + |Cr - 128| (0-255, BT.601) of an
  output animated from a desaturated photo: any colour there was painted by the engine;
- **still drift**: with a frozen driving frame, the mean absolute change between consecutive
  output frames (0-255) after the first second.

Images are (H, W, 3) uint8 RGB; masks (H, W) float in [0, 1]; landmarks (478, 2|3) pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from ..engine import topology as topo

BLINK_EYE_OPENING = 0.12  # a driver frame is a blink below this mean lid gap (interocular distances)
OPEN_MOUTH = 0.25  # a driver frame opens the mouth above this inner-lip gap (interocular distances)
EYE_GROW, MOUTH_GROW = 1.6, 1.3  # region polygons grown about their centres


def _poly_mask(points: np.ndarray, groups: tuple[np.ndarray, ...], grow: float, size_px: int) -> np.ndarray:
    mask = np.zeros((size_px, size_px), np.uint8)
    for idx in groups:
        p = np.asarray(points, np.float64)[idx, :2]
        c = p.mean(axis=0)
        cv2.fillPoly(mask, [np.round((c + (p - c) * grow) * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    return mask.astype(np.float64) / 255.0


def eye_region(points: np.ndarray, size_px: int) -> np.ndarray:
    """(S, S) float64 mask of both eyes, each contour grown by EYE_GROW."""
    return _poly_mask(points, (topo.RIGHT_EYE, topo.LEFT_EYE), EYE_GROW, size_px)


def mouth_region(points: np.ndarray, size_px: int) -> np.ndarray:
    """(S, S) float64 mask of the outer lips grown by MOUTH_GROW."""
    return _poly_mask(points, (topo.LIPS_OUTER,), MOUTH_GROW, size_px)


def face_region(points: np.ndarray, size_px: int) -> np.ndarray:
    """(S, S) float64 mask of the face oval."""
    return _poly_mask(points, (topo.FACE_OVAL,), 1.0, size_px)


def is_blink(points: np.ndarray) -> bool:
    """Whether a driver frame's mean lid gap is below BLINK_EYE_OPENING."""
    return float(np.mean(topo.eye_opening(points))) < BLINK_EYE_OPENING


def is_open_mouth(points: np.ndarray) -> bool:
    """Whether a driver frame's inner-lip gap is above OPEN_MOUTH."""
    return topo.mouth_opening(points) > OPEN_MOUTH


def masked_l1(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean |a - b| in [0, 1] units weighted by ``mask``; NaN for an empty mask."""
    w = float(mask.sum())
    if w <= 0:
        return float("nan")
    d = np.abs(a.astype(np.float64) - b.astype(np.float64)).mean(-1) / 255.0
    return float((d * mask).sum() / w)


def chroma(image: np.ndarray) -> np.ndarray:
    """(H, W) float64 |Cb - 128| + |Cr - 128| of an RGB uint8 image (BT.601, 0-255 units)."""
    x = image.astype(np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b
    return np.abs(cb) + np.abs(cr)


def chroma_percentile(image: np.ndarray, mask: np.ndarray | None = None, q: float = 99.0) -> float:
    """The q-th percentile of ``chroma`` over the pixels where mask > 0.5 (all pixels without a mask)."""
    c = chroma(image)
    sel = c if mask is None else c[mask > 0.5]
    return float(np.percentile(sel, q)) if sel.size else float("nan")


def desaturate(image: np.ndarray) -> np.ndarray:
    """The image with its chroma removed (BT.601 luma in all three channels), uint8."""
    y = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.repeat(np.clip(np.round(y), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def still_drift(frames: list[np.ndarray], fps: float, settle_s: float = 1.0) -> float:
    """Mean |o_t - o_(t-1)| (0-255) over consecutive frames after the first ``settle_s`` seconds."""
    start = int(round(settle_s * fps))
    tail = frames[start:]
    if len(tail) < 2:
        raise ValueError(f"need at least 2 frames after {settle_s} s at {fps} fps; got {len(frames)} frames")
    return float(np.mean([np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() for a, b in zip(tail, tail[1:])]))


@dataclass
class RegionScores:
    """Accumulates region L1 per mode over self-reenactment frames; ``means()`` for the report."""

    eye_blink: dict[str, list[float]]
    mouth_open: dict[str, list[float]]

    @classmethod
    def empty(cls) -> "RegionScores":
        return cls({}, {})

    def add(self, mode: str, output: np.ndarray, truth: np.ndarray, points: np.ndarray, valid: np.ndarray) -> None:
        """One frame of ``mode``: points are the driven (= the driver's) landmarks in crop pixels."""
        s = output.shape[0]
        if is_blink(points):
            self.eye_blink.setdefault(mode, []).append(masked_l1(output, truth, eye_region(points, s) * valid))
        if is_open_mouth(points):
            self.mouth_open.setdefault(mode, []).append(masked_l1(output, truth, mouth_region(points, s) * valid))

    def means(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for name, table in (("l1_eyes_blink", self.eye_blink), ("l1_mouth_open", self.mouth_open)):
            for mode, vals in table.items():
                vals = [v for v in vals if np.isfinite(v)]
                out.setdefault(mode, {})[name] = float(np.mean(vals)) if vals else float("nan")
                out[mode][name.replace("l1_", "frames_")] = float(len(vals))
        return out


def photo_behaviour(make_animator: Callable[[], object], photo: np.ndarray, motion: np.ndarray, fps: float,
                    still_s: float = 3.0) -> dict[str, float]:
    """Chroma of the desaturated ``photo`` animated by ``motion``, and drift under a frozen driver.

    Args: make_animator: a callable giving a fresh Animator (crop output) of the engine to measure;
    photo (H, W, 3) uint8; motion (T, 478, 3) driver landmarks in pixels; fps of the motion.
    Returns {"chroma_p99": worst frame's 99th percentile inside the face, "still_drift": see
    ``still_drift``, with the motion's first frame held for ``still_s`` seconds}.
    """
    grey = desaturate(photo)
    worst = 0.0
    with make_animator() as anim:  # type: ignore[attr-defined]
        anim.prepare(grey)
        for i, points in enumerate(motion):
            out = anim.step_landmarks(points, t=i / fps)
            face = face_region(anim.last.driven_points, out.shape[0])
            worst = max(worst, chroma_percentile(out, face))
    with make_animator() as anim:  # type: ignore[attr-defined]
        anim.prepare(photo)
        frames = [anim.step_landmarks(motion[0], t=i / fps).copy() for i in range(int(round(still_s * fps)))]
    return {"chroma_p99": worst, "still_drift": still_drift(frames, fps)}
