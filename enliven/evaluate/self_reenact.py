"""Self-reenactment: each clip's first frame with a face, driven by the clip's own later frames.

The crop transform comes from the source frame (as from a photo at inference) and is applied to
the driving frames too, so the driving frame's crop is the ground truth. Driven landmarks are the
driver's own (from the landmark cache), clamped as at inference: this measures the warp and the
generator, not the tracker. Per frame and mode: L1, PSNR, SSIM and the perceptual distance on the
face, the mouth and the whole crop (off-frame pixels excluded), AKD, expression error, CSIM; per
clip: flicker on a run of consecutive frames.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from ..engine import topology as topo
from ..engine.compose import crop_transform
from ..engine.refine import GeneratorRunner
from ..engine.relight import LightConfig
from ..engine.warp import Warper, WarpConfig
from ..train.cache import ClipLandmarks
from ..train.dataset import read_frames, self_reenact
from ._sampling import evenly_spaced
from .config import GRID_ROWS, EvalConfig
from .judges import Judges
from .metrics import (expression_error, face_mask, keypoint_distance, l1_error, mouth_mask, psnr, ssim,
                      temporal_flicker)
from .relit import Relight
from .results import ByMode, FrameMetrics, MetricRows, concatenated

class ClipPlan(NamedTuple):
    """Which frames of a clip are used."""

    source: int  # the source: the first frame with a face
    picks: np.ndarray  # (P,) int, measured frames, evenly spaced after the source
    run: np.ndarray  # (R,) int, consecutive frames from the middle, for the flicker measure

    @property
    def wanted(self) -> set[int]:
        return {self.source, *self.picks.tolist(), *self.run.tolist()}


class ReenactedFrame(NamedTuple):
    """One driving frame reenacted from the clip's source, at the crop's size S."""

    truth: np.ndarray  # (S, S, 3) uint8, the driving frame's crop (ground truth)
    outputs: ByMode[np.ndarray]  # (S, S, 3) uint8 each
    valid: np.ndarray  # (S, S) float64 in [0, 1]: 1 inside the driving frame
    points: np.ndarray  # (478, 3) float64, driven (ground-truth) landmarks, crop pixels


class ReenactedClip(NamedTuple):
    frames: dict[int, ReenactedFrame]  # by frame index; frames that could not be decoded are missing
    source_crop: np.ndarray | None  # (S, S, 3) uint8; None when no frame was reenacted
    source_points: np.ndarray  # (478, 3) float64, crop pixels


@dataclass(frozen=True)
class SelfFrameMetrics(FrameMetrics):
    """One output frame against its ground truth; L1 and SSIM in [0, 1] units, PSNR in dB."""

    l1_face: float  # face = the face oval of the driven landmarks, off-frame pixels excluded
    psnr_face: float
    ssim_face: float
    perceptual_face: float
    l1_crop: float  # crop = the whole crop, off-frame pixels excluded
    psnr_crop: float
    ssim_crop: float
    perceptual_crop: float
    l1_mouth: float  # mouth = the outer lips grown x1.3
    psnr_mouth: float
    face_missed: float  # 1.0 when MediaPipe found no face in the output or in the ground truth
    akd_px: float | None = None  # None when a face was missed
    expression_error: float | None = None  # canonical units; None when a face was missed
    csim: float | None = None  # measured on every ``csim_every``-th frame only


@dataclass
class StageTimings:
    """Per reenacted frame, milliseconds."""

    warp_ms: list[float] = field(default_factory=list)  # Warper.warp + fill_mouth_gap
    generator_ms: list[float] = field(default_factory=list)  # the runner, inputs to refined crop


class Regions(NamedTuple):
    """Pixel weights (S, S) float64 in [0, 1] of a frame's regions, off-frame pixels at 0."""

    face: np.ndarray  # the face oval of the driven landmarks
    mouth: np.ndarray  # the outer lips grown x1.3


class GridCandidate(NamedTuple):
    score: float  # the mouth's opening beyond the source's, plus a little noise to break ties
    row: np.ndarray  # (S, 4 S, 3) uint8: source | ground truth | analytic | trained


class ClipResult(NamedTuple):
    file: str  # relative to the data directory
    person: str
    rows: ByMode[MetricRows[SelfFrameMetrics]]


@dataclass(frozen=True)
class SelfReenactment:
    clips: list[ClipResult]  # clips with fewer than 3 face frames are left out
    timings: StageTimings
    open_mouth_grid: list[np.ndarray]  # the widest-opening frame of each clip, widest first
    random_grid: list[np.ndarray]  # a random frame of each of a random choice of clips

    @property
    def rows(self) -> ByMode[MetricRows[SelfFrameMetrics]]:
        return concatenated([c.rows for c in self.clips])


def plan_clip(found: np.ndarray, frames_per_clip: int, flicker_frames: int) -> ClipPlan | None:
    """The frames used of a clip whose face frames are ``found`` (N,) int; None when N < 3."""
    if len(found) < 3:
        return None
    source = int(found[0])
    rest = found[found > source]
    mid = len(rest) // 2
    return ClipPlan(source, evenly_spaced(rest, frames_per_clip), rest[mid:mid + flicker_frames])


def reenact_clip(clip: ClipLandmarks, frames: dict[int, np.ndarray], plan: ClipPlan, crop_px: int,
                 runner: GeneratorRunner, timings: StageTimings, warp: WarpConfig | None = None,
                 light: LightConfig | None = LightConfig()) -> ReenactedClip:
    """Warp (analytic) and refine (trained) the source to every planned frame, both relit with ``light`` (None:
    not relit) as the Animator relights; timings (warp, refiner) appended."""
    transform = crop_transform(clip.points[plan.source], crop_px)
    source_points = transform.points_to_crop(clip.points[plan.source])
    warper = Warper(source_points, crop_px, warp or WarpConfig())
    source_crop = None
    relight: Relight | None = None
    out: dict[int, ReenactedFrame] = {}
    for i in sorted(set(plan.picks.tolist()) | set(plan.run.tolist())):
        if i not in frames or plan.source not in frames:
            continue
        t0 = time.perf_counter()
        smp = self_reenact(frames[plan.source], clip.points[plan.source], frames[i], clip.points[i], transform,
                           warper, source_crop)
        t1 = time.perf_counter()
        if source_crop is None:
            source_crop = smp.source
            runner.prepare(source_crop)
            relight = Relight(light, source_crop, source_points)
        trained = runner.refine(smp.analytic, smp.driven_points)
        t2 = time.perf_counter()
        timings.warp_ms.append((t1 - t0) * 1e3)
        timings.generator_ms.append((t2 - t1) * 1e3)
        assert relight is not None  # set with the first frame
        relit = relight.frame(warper, smp.driven_points)
        out[i] = ReenactedFrame(smp.target, ByMode(relit(smp.analytic), relit(trained)),
                                smp.valid.astype(np.float64) / 255, smp.driven_points)
    return ReenactedClip(out, source_crop, source_points)


def _measure_output(img: np.ndarray, frame: ReenactedFrame, regions: Regions, truth_points: np.ndarray | None,
                    truth_embedding: np.ndarray | None, judges: Judges) -> SelfFrameMetrics:
    """Metrics of one output ``img`` (S, S, 3) uint8 of ``frame``."""
    truth, valid, perceptual = frame.truth, frame.valid, judges.perceptual
    face, mouth = regions
    out_points = judges.mesh(img)
    akd = expression = csim = None
    if truth_points is not None and out_points is not None:
        akd = keypoint_distance(out_points, truth_points)
        expression = expression_error(out_points, truth_points)
    if truth_embedding is not None:
        csim = judges.identity.cosine(judges.identity.embed(img, frame.points), truth_embedding)
    return SelfFrameMetrics(
        l1_face=l1_error(img, truth, face), psnr_face=psnr(img, truth, face), ssim_face=ssim(img, truth, face),
        perceptual_face=perceptual(img, truth, face), l1_crop=l1_error(img, truth, valid),
        psnr_crop=psnr(img, truth, valid), ssim_crop=ssim(img, truth, valid),
        perceptual_crop=perceptual(img, truth, valid), l1_mouth=l1_error(img, truth, mouth),
        psnr_mouth=psnr(img, truth, mouth), face_missed=0.0 if akd is not None else 1.0,
        akd_px=akd, expression_error=expression, csim=csim)


def measure_frame(frame: ReenactedFrame, judges: Judges, with_csim: bool) -> ByMode[SelfFrameMetrics]:
    """Both outputs of a reenacted frame against its ground truth; CSIM only ``with_csim``."""
    size_px = frame.truth.shape[0]
    regions = Regions(face_mask(frame.points, size_px) * frame.valid, mouth_mask(frame.points, size_px) * frame.valid)
    truth_points = judges.mesh(frame.truth)
    truth_embedding = judges.identity.embed(frame.truth, frame.points) if with_csim else None
    return ByMode(*(_measure_output(img, frame, regions, truth_points, truth_embedding, judges)
                    for img in frame.outputs))


def run_flicker(frames: list[ReenactedFrame]) -> ByMode[float] | None:
    """Flicker of each mode beyond the ground truth's own change, on the face of the run's first frame.

    Args: consecutive reenacted frames. Returns None for fewer than two.
    """
    if len(frames) < 2:
        return None
    first = frames[0]
    mask = face_mask(first.points, first.truth.shape[0]) * first.valid
    truths = [f.truth for f in frames]
    per_mode = zip(*(f.outputs for f in frames))  # (analytic frames, trained frames)
    return ByMode(*(temporal_flicker(list(outputs), truths, mask) for outputs in per_mode))


def measure_clip(reenacted: ReenactedClip, plan: ClipPlan, judges: Judges, csim_every: int,
                 rng: np.random.Generator) -> tuple[ByMode[MetricRows[SelfFrameMetrics]], list[GridCandidate]]:
    """The metric rows of a reenacted clip, and a grid row per measured frame (one ``rng.random()`` each)."""
    rows: ByMode[MetricRows[SelfFrameMetrics]] = ByMode(MetricRows(), MetricRows())
    candidates = []
    for k, i in enumerate(plan.picks.tolist()):
        frame = reenacted.frames.get(i)
        if frame is None:
            continue
        for into, row in zip(rows, measure_frame(frame, judges, with_csim=k % max(csim_every, 1) == 0)):
            into.frames.append(row)
        if reenacted.source_crop is not None:
            opening = topo.mouth_opening(frame.points) - topo.mouth_opening(reenacted.source_points)
            candidates.append(GridCandidate(opening + 0.01 * rng.random(), np.concatenate(
                [reenacted.source_crop, frame.truth, *frame.outputs], axis=1)))
    flicker = run_flicker([reenacted.frames[i] for i in plan.run.tolist() if i in reenacted.frames])
    if flicker is not None:
        for into, value in zip(rows, flicker):
            into.flicker.append(value)
    return rows, candidates


def run_self_reenactment(clips: list[ClipLandmarks], data_dir: Path, cfg: EvalConfig, runner: GeneratorRunner,
                         judges: Judges, rng: np.random.Generator, progress: bool = True) -> SelfReenactment:
    """Self-reenactment of every clip with at least 3 face frames, both modes."""
    timings = StageTimings()
    results: list[ClipResult] = []
    showcase: list[GridCandidate] = []
    random_rows: list[np.ndarray] = []
    for clip in tqdm(clips, desc="self-reenactment", unit="clip", disable=not progress):
        plan = plan_clip(np.flatnonzero(clip.found), cfg.frames_per_clip, cfg.flicker_frames)
        if plan is None:
            continue
        frames = read_frames(data_dir / clip.row.file, plan.wanted)
        reenacted = reenact_clip(clip, frames, plan, cfg.crop_px, runner, timings, WarpConfig(lid_slide=cfg.lid_slide),
                                 cfg.light)
        rows, candidates = measure_clip(reenacted, plan, judges, cfg.csim_every, rng)
        if candidates:  # the widest-opening frame of each clip, so one clip cannot fill the grid
            showcase.append(max(candidates, key=lambda c: c.score))
            random_rows.append(candidates[int(rng.integers(len(candidates)))].row)
        results.append(ClipResult(clip.row.file, clip.row.person_id, rows))
    showcase.sort(key=lambda c: -c.score)
    chosen = rng.choice(len(random_rows), min(GRID_ROWS, len(random_rows)), replace=False)
    return SelfReenactment(results, timings, [c.row for c in showcase[:GRID_ROWS]],
                           [random_rows[int(j)] for j in chosen])
