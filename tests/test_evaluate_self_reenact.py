"""Self-reenactment's steps on constructed frames, with stand-in judges (the real ones need the train extra)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from enliven.engine import topology as topo
from enliven.engine.canonical import load_canonical
from enliven.evaluate import metrics
from enliven.evaluate._sampling import evenly_spaced
from enliven.evaluate.judges import DlibIdentity, Judges
from enliven.evaluate.results import ByMode
from enliven.evaluate.self_reenact import (ClipPlan, ReenactedClip, ReenactedFrame, measure_clip, measure_frame,
                                           plan_clip, run_flicker)

S = 64  # crop side of the constructed frames


def face(size: float = S) -> np.ndarray:
    return load_canonical().points * (size / 5) + [size / 2, size / 2, 0]


class FakeMesh:
    """'Finds' the constructed face, moved right by a tenth of the image's mean grey; None for blank images."""

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        return None if image.max() == 0 else face() + [image.mean() / 10, 0.0, 0.0]


class FakeIdentity:
    cosine = staticmethod(DlibIdentity.cosine)

    def embed(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        return image.reshape(-1, 3).mean(0) - 100.0


def fake_judges() -> Judges:
    return Judges(lambda a, b, mask=None: 2 * metrics.l1_error(a, b, mask), FakeIdentity(), FakeMesh())  # type: ignore[arg-type]


def textured(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(60, 190, (S, S, 3)).astype(np.uint8)


def frame(truth: np.ndarray, analytic: np.ndarray, trained: np.ndarray) -> ReenactedFrame:
    return ReenactedFrame(truth, ByMode(analytic, trained), np.ones((S, S)), face())


def test_evenly_spaced_reference_values() -> None:
    idx = np.arange(10) * 2
    np.testing.assert_array_equal(evenly_spaced(idx, 4), [0, 6, 12, 18])  # positions 0, 3, 6, 9
    np.testing.assert_array_equal(evenly_spaced(idx, 50), idx)
    assert evenly_spaced(idx[:0], 3).size == 0


def test_plan_clip_takes_the_first_face_as_source() -> None:
    assert plan_clip(np.array([4, 9]), 10, 5) is None  # fewer than 3 face frames
    plan = plan_clip(np.array([3, 4, 5, 7, 8, 9, 10, 12]), 3, 2)
    assert plan is not None and plan.source == 3
    np.testing.assert_array_equal(plan.picks, [4, 8, 12])  # positions 0, 3, 6 of the 7 frames after the source
    np.testing.assert_array_equal(plan.run, [8, 9])  # from the middle of the frames after the source
    assert plan.wanted == {3, 4, 8, 9, 12}


def test_measure_frame_scores_a_perfect_and_an_offset_output() -> None:
    truth = textured(0)
    m = measure_frame(frame(truth, truth.copy(), truth + 10), fake_judges(), with_csim=True)
    perfect, offset = m
    assert (perfect.l1_face, perfect.psnr_face, perfect.l1_mouth, perfect.akd_px, perfect.face_missed) == \
        (0.0, 100.0, 0.0, 0.0, 0.0)
    assert perfect.ssim_crop == pytest.approx(1.0) and perfect.csim == pytest.approx(1.0)
    assert perfect.expression_error == pytest.approx(0.0, abs=1e-9)
    assert offset.l1_face == pytest.approx(10 / 255) and offset.l1_crop == pytest.approx(10 / 255)
    assert offset.psnr_mouth == pytest.approx(-10 * math.log10((10 / 255) ** 2))
    assert offset.perceptual_face == pytest.approx(2 * 10 / 255)
    assert offset.akd_px == pytest.approx(1.0)  # the fake mesh moves by a tenth of the mean grey's change


def test_measure_frame_without_a_face_or_csim_leaves_those_out() -> None:
    truth = textured(1)
    blank = np.zeros_like(truth)
    analytic, trained = measure_frame(frame(truth, blank, truth), fake_judges(), with_csim=False)
    assert analytic.face_missed == 1.0 and analytic.akd_px is None and analytic.expression_error is None
    assert trained.face_missed == 0.0 and trained.akd_px == 0.0
    assert analytic.csim is None and trained.csim is None
    assert dict(analytic.measured()).keys() == {"l1_face", "psnr_face", "ssim_face", "perceptual_face", "l1_crop",
                                                "psnr_crop", "ssim_crop", "perceptual_crop", "l1_mouth",
                                                "psnr_mouth", "face_missed"}


def test_run_flicker_measures_each_mode_beyond_the_truth() -> None:
    truths = [textured(2), textured(3)]
    frames = [frame(t, t.copy(), truths[0]) for t in truths]  # analytic follows the truth, trained stands still
    assert run_flicker(frames[:1]) is None
    analytic, trained = run_flicker(frames)  # type: ignore[misc]
    mask = metrics.face_mask(face(), S)
    assert analytic == 0.0
    assert trained == pytest.approx(metrics.temporal_flicker([truths[0], truths[0]], truths, mask))


def test_measure_clip_skips_missing_frames_and_spaces_csim() -> None:
    frames = {i: frame(textured(i), textured(i), textured(i) + 5) for i in (3, 5, 6)}
    opened = face()
    opened[topo.LIPS_INNER_LOWER, 1] += 3
    frames[5] = frames[5]._replace(points=opened)
    clip = ReenactedClip(frames, textured(9), face())
    plan = ClipPlan(0, np.array([3, 5, 7]), np.array([5, 6]))  # frame 7 could not be decoded
    rng = np.random.default_rng(4)
    rows, candidates = measure_clip(clip, plan, fake_judges(), csim_every=2, rng=rng)
    assert [r.csim is not None for r in rows.trained.frames] == [True, False]  # picks 0 and 1: only 0 has CSIM
    assert len(rows.analytic.flicker) == 1 and len(rows.trained.flicker) == 1
    noise = np.random.default_rng(4).random(2) * 0.01  # one draw per measured frame, in order
    opening = topo.mouth_opening(opened) - topo.mouth_opening(face())
    assert [c.score for c in candidates] == pytest.approx([noise[0], opening + noise[1]])
    assert candidates[1].row.shape == (S, 4 * S, 3)
    np.testing.assert_array_equal(candidates[1].row[:, S:2 * S], frames[5].truth)
