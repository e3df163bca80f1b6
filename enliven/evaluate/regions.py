"""Region and behaviour metrics: eyes on blink frames, mouths on open-mouth frames, colour, stillness.

What face-wide averages hide:
- **blink eye L1**: L1 over both eyes (each eye contour grown x1.6 about its centre, so lids, lashes
  and the lid skin count) on frames whose driver's lid gap (mean of both eyes' ``topology.eye_opening``,
  lid gap / interocular distance) is below ``BLINK_FRACTION`` of its clip's median (open eyes measure
  ~0.085 at the median of the data set's clips, shut ones ~0.01-0.02), so closing lids are judged
  where they close;
- **open-mouth L1**: L1 over the outer lips grown x1.3 on frames whose driver's
  ``topology.mouth_opening`` (inner-lip gap / interocular distance) is above ``OPEN_MOUTH``;
- **chroma**: the 99th percentile, inside the face, of |Cb - 128| + |Cr - 128| (0-255, BT.601) of an
  output animated from a desaturated photo: any colour there was painted by the engine;
- **still drift**: with a frozen driving frame, the mean absolute change between consecutive
  output frames (0-255) after the first second.

Images are (H, W, 3) uint8 RGB; masks (H, W) float in [0, 1]; landmarks (478, 2|3) pixels.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from tqdm import tqdm

from ..animation.animator import Animator, AnimatorConfig
from ..engine import topology as topo
from ..engine.compose import crop_transform
from ..engine.defaults import builtin_photo
from ..engine.patches import PatchRunner
from ..engine.procedural import builtin_motion
from ..engine.refine import GeneratorRunner
from ..engine.relight import LightConfig
from ..engine.warp import WarpConfig, Warper
from ..train.dataset import Reenactment, eye_openings, mouth_openings, read_frames, self_reenact
from .relit import FrameRelight, Relight

BLINK_FRACTION = 0.5  # a driver frame is a blink when its lid gap is below this fraction of its clip's median
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


def inner_mouth_region(points: np.ndarray, size_px: int) -> np.ndarray:
    """(S, S) float64 mask inside the inner lips: the mouth's interior (teeth, tongue, the dark cavity)."""
    return _poly_mask(points, (topo.LIPS_INNER,), 1.0, size_px)


def face_region(points: np.ndarray, size_px: int) -> np.ndarray:
    """(S, S) float64 mask of the face oval."""
    return _poly_mask(points, (topo.FACE_OVAL,), 1.0, size_px)


def is_blink(points: np.ndarray, open_level: float) -> bool:
    """Whether a driver frame's mean lid gap is below BLINK_FRACTION of ``open_level`` (its clip's median)."""
    return float(np.mean(topo.eye_opening(points))) < BLINK_FRACTION * open_level


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
    start = round(settle_s * fps)
    tail = frames[start:]
    if len(tail) < 2:
        raise ValueError(f"need at least 2 frames after {settle_s} s at {fps} fps; got {len(frames)} frames")
    return float(np.mean([np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() for a, b in pairwise(tail)]))


@dataclass
class RegionScores:
    """Accumulates region L1 per mode over self-reenactment frames; ``means()`` for the report."""

    eye_blink: dict[str, list[float]]
    mouth_open: dict[str, list[float]]

    @classmethod
    def empty(cls) -> RegionScores:
        return cls({}, {})

    def add(self, mode: str, output: np.ndarray, truth: np.ndarray, points: np.ndarray, valid: np.ndarray,
            blink: bool, open_mouth: bool) -> None:
        """One frame of ``mode``: images (S, S, 3) uint8; points: the driven landmarks in crop pixels; valid
        (S, S) in [0, 1]; blink / open_mouth: whether the driver's frame is one (``is_blink``, ``is_open_mouth``)."""
        s = output.shape[0]
        if blink:
            self.eye_blink.setdefault(mode, []).append(masked_l1(output, truth, eye_region(points, s) * valid))
        if open_mouth:
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
        frames = [anim.step_landmarks(motion[0], t=i / fps).copy() for i in range(round(still_s * fps))]
    return {"chroma_p99": worst, "still_drift": still_drift(frames, fps)}


def region_frames(clip, per_clip: int = 6) -> tuple[int, dict[int, tuple[bool, bool]]] | None:
    """A clip's source frame and its blink and open-mouth driver frames, at most ``per_clip`` of each.

    Args: clip: a ``train.cache.ClipLandmarks``. Returns (source index, {frame index: (blink, open_mouth)}),
    the frames evenly spread over each kind; None when the clip has under 10 face frames or neither kind.
    """
    found = np.flatnonzero(clip.found)
    if len(found) < 10:
        return None
    src = int(found[0])
    eyes, mouths = eye_openings(clip.points[found]), mouth_openings(clip.points[found])
    level = float(np.median(eyes))
    blinks = found[(eyes < BLINK_FRACTION * level) & (found != src)]
    opens = found[(mouths > OPEN_MOUTH) & (found != src)]
    picks = {int(i): (bool(i in set(blinks.tolist())), bool(i in set(opens.tolist())))
             for group in (blinks, opens) if len(group)
             for i in group[np.unique(np.linspace(0, len(group) - 1, min(per_clip, len(group))).astype(int))]}
    return (src, picks) if picks else None


class RegionSample(NamedTuple):
    """One blink or open-mouth driver frame of a clip, reenacted from the clip's source."""

    sample: Reenactment  # the warp's output, the ground truth and the driven landmarks (crop pixels)
    trained: np.ndarray | None  # (S, S, 3) uint8, the refiner's output (None without a runner)
    blink: bool  # the driver's frame is a blink (``is_blink``)
    open_mouth: bool  # ... opens the mouth (``is_open_mouth``)
    relit: FrameRelight  # the frame's relight, for any of its outputs (the outputs above are not relit)


def region_samples(clips: list, data_dir: Path, crop_px: int, runner: GeneratorRunner | None,
                   warp: WarpConfig | None = None, per_clip: int = 6, progress: bool = True,
                   keep: Callable[[bool, bool], bool] | None = None,
                   light: LightConfig | None = LightConfig()) -> Iterator[RegionSample]:
    """The blink and open-mouth frames of each clip (``region_frames``), self-reenacted from its source.

    Args as ``region_eval``; ``keep(blink, open_mouth)``: which of the frames to decode and reenact (all
    without it). The runner is prepared with each clip's source before its first frame.
    """
    for clip in tqdm(clips, desc="blinks and open mouths", unit="clip", disable=not progress):
        chosen = region_frames(clip, per_clip)
        if chosen is None:
            continue
        src, picks = chosen
        if keep is not None:
            picks = {i: kinds for i, kinds in picks.items() if keep(*kinds)}
        frames = read_frames(Path(data_dir) / clip.row.file, {src, *picks})
        if src not in frames:
            continue
        t = crop_transform(clip.points[src], crop_px)
        warper = Warper(t.points_to_crop(clip.points[src]), crop_px, warp or WarpConfig())
        prepared = False
        relight: Relight | None = None
        for i, (blink, open_mouth) in sorted(picks.items()):
            if i not in frames:
                continue
            smp = self_reenact(frames[src], clip.points[src], frames[i], clip.points[i], t, warper)
            if relight is None:
                relight = Relight(light, smp.source, smp.source_points)
            trained = None
            if runner is not None:
                if not prepared:
                    runner.prepare(smp.source)
                    prepared = True
                trained = runner.refine(smp.analytic, smp.driven_points)
            yield RegionSample(smp, trained, blink, open_mouth, relight.frame(warper, smp.driven_points))


def region_eval(clips: list, data_dir: Path, crop_px: int, runner: GeneratorRunner | None,
                warp: WarpConfig | None = None, per_clip: int = 6, progress: bool = True,
                patches: PatchRunner | None = None,
                light: LightConfig | None = LightConfig()) -> dict[str, dict[str, float]]:
    """Eye L1 on blink frames and mouth L1 on open-mouth frames, self-reenactment of each clip.

    Args: clips: ``train.cache.ClipLandmarks`` of the split to judge; data_dir: where their videos are;
    runner: the trained refiner (None: analytic only); warp: the analytic warp's config; per_clip: at most
    this many blink and this many open-mouth frames per clip (evenly spread). Source = the clip's first
    frame with a face, as in ``evaluate``; ``patches``: eye / mouth patch refiners, run on the trained output
    as the Animator runs them (mode "patched"; use crop_px 512); every output relit with ``light`` last, as the
    Animator relights (None: not relit). Returns {mode: {metric: value}} (``RegionScores.means``).
    """
    scores = RegionScores.empty()
    for smp, trained, blink, open_mouth, relit in region_samples(clips, data_dir, crop_px, runner, warp, per_clip,
                                                                 progress, light=light):
        valid = smp.valid.astype(np.float64) / 255.0
        outputs = {"analytic": smp.analytic}
        if trained is not None:
            outputs["trained"] = trained
            if patches is not None:
                outputs["patched"] = patches.refine(trained, smp.driven_points, smp.source, smp.source_points,
                                                    runner.chroma)  # type: ignore[union-attr]
        for mode, img in outputs.items():
            scores.add(mode, relit(img), smp.target, smp.driven_points, valid, blink, open_mouth)
    return scores.means()


def behaviour_eval(crop_px: int, weights: str | None, backend: str, precision: str,
                   lid_slide: bool = True, light: LightConfig | None = LightConfig()) -> dict[str, dict[str, float]]:
    """``photo_behaviour`` of the built-in photo and motion (every 5th frame at 25 fps) for both engines.

    Both engines run the warp of ``lid_slide`` (the shipped refiner of that warp, or ``weights``).
    """
    stride, fps = 5, 25.0
    motion = builtin_motion(fps=fps)[::stride]
    out = {}
    for engine in ("analytic", "trained"):
        warp = WarpConfig(lid_slide=lid_slide)
        cfg = AnimatorConfig(crop_size_px=crop_px, output="crop", engine=engine, generator_weights=weights,
                             backend=backend, precision=precision, warp=warp, fps=fps / stride,  # type: ignore[arg-type]
                             relight=light)
        out[engine] = photo_behaviour(lambda cfg=cfg: Animator(cfg), builtin_photo(), motion, fps / stride)
    return out


def report_sections(clips: list, data_dir: Path, crop_px: int, runner: GeneratorRunner | None, weights: str | None,
                    backend: str, precision: str, lid_slide: bool = True, progress: bool = True,
                    light: LightConfig | None = LightConfig()) -> dict[str, dict[str, dict[str, float]]]:
    """The report's "regions" (``region_eval``) and "behaviour" (``behaviour_eval``) sections."""
    return {"regions": region_eval(clips, data_dir, crop_px, runner, WarpConfig(lid_slide=lid_slide),
                                   progress=progress, light=light),
            "behaviour": behaviour_eval(crop_px, weights, backend, precision, lid_slide, light)}


def report_markdown(report: dict) -> list[str]:
    """Markdown lines of the report's "regions" and "behaviour" sections (empty if it has none)."""
    lines: list[str] = []
    regions, behaviour = report.get("regions"), report.get("behaviour")
    if regions:
        lines += ["## Blinks and open mouths (self-reenactment)", "",
                  (f"Eye L1 (both eye contours grown x{EYE_GROW}) on frames whose lid gap is below {BLINK_FRACTION} "
                  f"of the clip's median; mouth L1 (outer lips grown x{MOUTH_GROW}) on frames whose inner-lip gap "
                  f"is above {OPEN_MOUTH} interocular distances. At most 6 of each per clip."), "",
                  "| mode | L1 eyes, blinks | frames | L1 mouth, open | frames |", "|---|---|---|---|---|",
                  *[f"| {m} | {v.get('l1_eyes_blink', float('nan')):.4f} | {v.get('frames_eyes_blink', 0):.0f} | "
                    f"{v.get('l1_mouth_open', float('nan')):.4f} | {v.get('frames_mouth_open', 0):.0f} |"
                    for m, v in regions.items()], ""]
    if behaviour:
        lines += ["## Colour and stillness (the built-in photo)", "",
                  ("Chroma: the worst frame's 99th percentile of |Cb-128|+|Cr-128| (0-255) inside the face, the photo "
                  "made black-and-white and moved by the built-in motion. Still drift: mean |change| per frame "
                  "(0-255) after the first second, driver landmarks frozen."), "",
                  "| mode | chroma p99 (grey photo) | still drift |", "|---|---|---|",
                  *[f"| {m} | {v['chroma_p99']:.2f} | {v['still_drift']:.4f} |" for m, v in behaviour.items()], ""]
    return lines
