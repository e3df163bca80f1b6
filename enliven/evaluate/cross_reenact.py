"""Cross-reenactment: the first frame of person A driven by a clip of person B, through the Animator.

Relative motion, calibration and smoothing as in the product, crop output. Per output frame and
mode: CSIM to A's own crop, pose and expression error against the driver's change since its first
frame (MediaPipe on the output), whether a face was found at all; per pair: flicker on the face.
Also the public grid: the built-in (public-domain) photo driven by val clips.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from ..animation.animator import Animator, AnimatorConfig, Source
from ..engine import topology as topo
from ..engine.compose import crop_transform
from ..engine.defaults import builtin_photo
from ..engine.errors import EnlivenError
from ..engine.refine import GeneratorRunner
from ..engine.relight import LightConfig
from ..engine.render import draw_landmarks
from ..engine.warp import WarpConfig
from ..train.cache import ClipLandmarks
from ..train.dataset import read_frames
from ._sampling import evenly_spaced
from .config import GRID_ROWS, EvalConfig
from .judges import Judges
from .metrics import expression_change_error, face_mask, pose_change_error, temporal_flicker
from .relit import Relight
from .results import MODES, ByMode, FrameMetrics, MetricRows, concatenated

log = logging.getLogger(__name__)

PUBLIC_GRID_CLIPS = 4  # val clips driving the built-in photo in the public grid


class Pair(NamedTuple):
    source: ClipLandmarks  # a clip of person A: its first frame with a face is the photo
    driver: ClipLandmarks  # a clip of person B


class DrivenFrame(NamedTuple):
    outputs: ByMode[np.ndarray]  # (S, S, 3) uint8 each, the animated crop
    driver_points: np.ndarray  # (478, 3) float, the driver's landmarks, its frame's pixels


@dataclass(frozen=True)
class CrossFrameMetrics(FrameMetrics):
    """One output frame against the driver; measured only where MediaPipe finds a face in the output."""

    face_missed: float  # 1.0 when MediaPipe found no face in the output
    pose_error_deg: float | None = None  # see metrics.pose_change_error
    expression_error: float | None = None  # canonical units, see metrics.expression_change_error
    csim_to_source: float | None = None  # measured on every ``csim_every``-th frame only


class PairResult(NamedTuple):
    rows: ByMode[MetricRows[CrossFrameMetrics]]
    grid_row: np.ndarray | None  # see grid_row; None when no driver frame was animated


@dataclass(frozen=True)
class CrossReenactment:
    pairs: list[ByMode[MetricRows[CrossFrameMetrics]]]  # pairs whose photo had no usable face are left out
    pairs_chosen: int
    grid: list[np.ndarray]  # rows photo | driver landmarks | analytic | trained, (S, 4 S, 3) uint8

    @property
    def rows(self) -> ByMode[MetricRows[CrossFrameMetrics]]:
        return concatenated(self.pairs)


def choose_pairs(clips: list[ClipLandmarks], count: int, rng: np.random.Generator) -> list[Pair]:
    """``count`` random (A, B) pairs of different people (at most all of them); each person's first clip."""
    people: dict[str, list[ClipLandmarks]] = {}
    for c in clips:
        people.setdefault(c.row.person_id, []).append(c)
    names = sorted(people)
    pairs = [(a, b) for a in names for b in names if a != b]
    chosen = [pairs[int(j)] for j in rng.choice(len(pairs), min(count, len(pairs)), replace=False)]
    return [Pair(people[a][0], people[b][0]) for a, b in chosen]


def drive(anim: Animator, runner: GeneratorRunner, clip: ClipLandmarks, picks: np.ndarray,
          light: LightConfig | None = None) -> list[DrivenFrame]:
    """Step the prepared ``anim`` (analytic, not relit) through every face frame of ``clip``; the outputs of
    ``picks`` (P,) int, both modes relit with ``light`` after the refiner (None: not relit)."""
    assert anim.source is not None  # prepared
    relight = Relight(light, anim.source.crop, anim.source.points)
    wanted = set(picks.tolist())
    out = []
    for i in np.flatnonzero(clip.found):
        analytic = anim.step_landmarks(clip.points[i], t=i / clip.fps)
        if i in wanted:
            driven = anim.last.driven_points
            assert driven is not None  # every step sets them
            trained = runner.refine(analytic, driven)
            relit = relight.frame(anim.warper, driven)
            out.append(DrivenFrame(ByMode(relit(analytic), relit(trained)), clip.points[i]))
    return out


def _measure_output(img: np.ndarray, points: np.ndarray | None, driver: np.ndarray,
                    first: tuple[np.ndarray, np.ndarray] | None, source_embedding: np.ndarray | None,
                    judges: Judges) -> CrossFrameMetrics:
    """``points``: MediaPipe's on ``img``; ``first``: (output, driver) landmarks where the output first had a face."""
    if points is None or first is None:
        return CrossFrameMetrics(face_missed=1.0)
    csim = None
    if source_embedding is not None:
        csim = judges.identity.cosine(judges.identity.embed(img, points), source_embedding)
    return CrossFrameMetrics(face_missed=0.0, pose_error_deg=pose_change_error(points, first[0], driver, first[1]),
                             expression_error=expression_change_error(points, first[0], driver, first[1]),
                             csim_to_source=csim)


def measure_driven(driven: list[DrivenFrame], source_embedding: np.ndarray, judges: Judges,
                   csim_every: int) -> ByMode[list[CrossFrameMetrics]]:
    """A metric row per driven frame and mode; changes are counted from each mode's first output with a face."""
    rows: ByMode[list[CrossFrameMetrics]] = ByMode([], [])
    first: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(MODES)
    for k, frame in enumerate(driven):
        embedding = source_embedding if k % max(csim_every, 1) == 0 else None
        for m, img in enumerate(frame.outputs):
            points = judges.mesh(img)
            if points is not None and first[m] is None:
                first[m] = (points, frame.driver_points)
            rows[m].append(_measure_output(img, points, frame.driver_points, first[m], embedding, judges))
    return rows


def grid_row(source_crop: np.ndarray, driven: list[DrivenFrame], size_px: int) -> np.ndarray:
    """(S, 4 S, 3) uint8: photo | driver landmarks | analytic | trained, at the driver's widest mouth opening."""
    j = int(np.argmax([topo.mouth_opening(f.driver_points) for f in driven]))
    points = driven[j].driver_points
    drawing = draw_landmarks(crop_transform(points, size_px).points_to_crop(points), size_px)
    return np.concatenate([source_crop, drawing, *driven[j].outputs], 1)


def _prepared_photo(anim: Animator, pair: Pair, data_dir: Path) -> Source | None:
    """Prepare ``anim`` with A's first face frame; None (logged) when the Animator finds no usable face."""
    index = int(np.flatnonzero(pair.source.found)[0])
    photo = read_frames(data_dir / pair.source.row.file, {index})[index]
    try:
        return anim.prepare(photo)
    except EnlivenError as e:
        log.warning("cross %s <- %s: %s", pair.source.row.person_id, pair.driver.row.person_id, e)
        return None


def cross_pair(pair: Pair, data_dir: Path, cfg: EvalConfig, runner: GeneratorRunner,
               judges: Judges) -> PairResult | None:
    """Animate A's photo with B's clip and measure both modes; None if the Animator finds no usable face in A's."""
    with Animator(AnimatorConfig(crop_size_px=cfg.crop_px, output="crop", engine="analytic",
                                 warp=WarpConfig(lid_slide=cfg.lid_slide), relight=None)) as anim:
        source = _prepared_photo(anim, pair, data_dir)
        if source is None:
            return None
        runner.prepare(source.crop)
        source_embedding = judges.identity.embed(source.crop, source.points)
        picks = evenly_spaced(np.flatnonzero(pair.driver.found), cfg.frames_per_clip)
        driven = drive(anim, runner, pair.driver, picks, cfg.light)
    per_mode = measure_driven(driven, source_embedding, judges, cfg.csim_every)
    mask = face_mask(source.points, cfg.crop_px)
    series = ByMode([f.outputs.analytic for f in driven], [f.outputs.trained for f in driven])
    rows = ByMode(*(MetricRows(frames, [temporal_flicker(outputs[:cfg.flicker_frames], None, mask)])
                    for frames, outputs in zip(per_mode, series)))
    return PairResult(rows, grid_row(source.crop, driven, cfg.crop_px) if driven else None)


def run_cross_reenactment(clips: list[ClipLandmarks], data_dir: Path, cfg: EvalConfig, runner: GeneratorRunner,
                          judges: Judges, rng: np.random.Generator, progress: bool = True) -> CrossReenactment:
    """Cross-reenactment of ``cfg.cross_pairs`` random pairs of people, both modes."""
    chosen = choose_pairs(clips, cfg.cross_pairs, rng)
    results = []
    for pair in tqdm(chosen, desc="cross-reenactment", unit="pair", disable=not progress):
        result = cross_pair(pair, data_dir, cfg, runner, judges)
        if result is not None:
            results.append(result)
    grid = [r.grid_row for r in results if r.grid_row is not None]
    return CrossReenactment([r.rows for r in results], len(chosen), grid[:GRID_ROWS])


def public_grid(clips: list[ClipLandmarks], size_px: int, runner: GeneratorRunner,
                rng: np.random.Generator, light: LightConfig | None = LightConfig()) -> list[np.ndarray]:
    """Rows photo | driver landmarks | analytic | trained, (S, 4 S, 3) uint8, for the built-in photo driven
    by a few random val clips up to each clip's widest mouth opening (both relit with ``light``)."""
    rows = []
    with Animator(AnimatorConfig(crop_size_px=size_px, output="crop", engine="analytic", relight=None)) as anim:
        source = anim.prepare(builtin_photo())
        runner.prepare(source.crop)
        relight = Relight(light, source.crop, source.points)
        for clip in [clips[int(j)] for j in rng.choice(len(clips), min(PUBLIC_GRID_CLIPS, len(clips)), replace=False)]:
            anim.prepare(builtin_photo())
            found = np.flatnonzero(clip.found)
            best = int(found[int(np.argmax([topo.mouth_opening(clip.points[i]) for i in found]))])
            out = None
            for i in found[found <= best]:
                out = anim.step_landmarks(clip.points[i], t=i / clip.fps)
            if out is None:
                continue
            driven = anim.last.driven_points
            assert driven is not None  # every step sets them
            trained = runner.refine(out, driven)
            relit = relight.frame(anim.warper, driven)
            drv = clip.points[best]
            drawing = draw_landmarks(crop_transform(drv, size_px).points_to_crop(drv), size_px)
            rows.append(np.concatenate([source.crop, drawing, relit(out), relit(trained)], axis=1))
    return rows
