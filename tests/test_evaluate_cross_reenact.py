"""Cross-reenactment's steps on constructed landmarks, with stand-in judges (the real ones need the train extra)."""
from __future__ import annotations

import numpy as np
import pytest

from enliven.engine import topology as topo
from enliven.engine.canonical import load_canonical, rotation_from_angles
from enliven.evaluate import metrics
from enliven.evaluate.cross_reenact import DrivenFrame, choose_pairs, grid_row, measure_driven
from enliven.evaluate.judges import DlibIdentity, Judges
from enliven.evaluate.results import ByMode
from enliven.train.cache import ClipLandmarks, ManifestRow

S = 64


def face(size: float = S, yaw: float = 0.0) -> np.ndarray:
    pts = load_canonical().points @ rotation_from_angles(yaw, 0, 0).T
    return pts * (size / 5) + [size / 2, size / 2, 0]


class FakeMesh:
    """The output's head turned by its mean grey / 10 degrees; None for blank images."""

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        return None if image.max() == 0 else face(yaw=image.mean() / 10)


class FakeIdentity:
    cosine = staticmethod(DlibIdentity.cosine)

    def embed(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        return image.reshape(-1, 3).mean(0)


def fake_judges() -> Judges:
    return Judges(lambda a, b, mask=None: 0.0, FakeIdentity(), FakeMesh())  # type: ignore[arg-type]


def grey(level: int) -> np.ndarray:
    return np.full((S, S, 3), level, np.uint8)


def clip(person: str, n: int = 1) -> ClipLandmarks:
    return ClipLandmarks(ManifestRow(f"clips/{person}{n}.mp4", "clip", person, "val", 3, 25.0),
                         np.zeros((3, 478, 3), np.float32), 25.0, (S, S))


def test_choose_pairs_takes_different_people_and_their_first_clips() -> None:
    clips = [clip("a"), clip("b"), clip("a", 2), clip("c")]
    pairs = choose_pairs(clips, 10, np.random.default_rng(0))
    assert len(pairs) == 6  # every ordered pair of 3 people, no more
    assert {(p.source.row.person_id, p.driver.row.person_id) for p in pairs} == \
        {(x, y) for x in "abc" for y in "abc" if x != y}
    assert all(p.source.row.file != "clips/a2.mp4" for p in pairs)
    again = choose_pairs(clips, 2, np.random.default_rng(0))
    assert len(again) == 2 and again == choose_pairs(clips, 2, np.random.default_rng(0))


def test_measure_driven_counts_changes_from_the_first_face_per_mode() -> None:
    # analytic: blank (no face), then turned 10 and 13 degrees; trained: 10, 12 and 16 degrees;
    # the driver turns 0, 0 and 2 degrees
    driven = [DrivenFrame(ByMode(grey(0), grey(100)), face(200)),
              DrivenFrame(ByMode(grey(100), grey(120)), face(200)),
              DrivenFrame(ByMode(grey(130), grey(160)), face(200, yaw=2))]
    source_embedding = np.array([1.0, 1.0, 1.0])
    rows = measure_driven(driven, source_embedding, fake_judges(), csim_every=2)
    assert [r.face_missed for r in rows.analytic] == [1.0, 0.0, 0.0]
    assert rows.analytic[0].pose_error_deg is None and rows.analytic[0].csim_to_source is None
    assert rows.analytic[1].pose_error_deg == pytest.approx(0.0, abs=1e-6)  # its first face: no change yet
    assert rows.analytic[2].pose_error_deg == pytest.approx(abs((13 - 10) - 2) / 3, abs=1e-6)
    assert [r.pose_error_deg for r in rows.trained] == pytest.approx([0.0, 2 / 3, abs((16 - 10) - 2) / 3], abs=1e-6)
    assert [r.csim_to_source is not None for r in rows.trained] == [True, False, True]  # every 2nd frame
    assert rows.trained[0].csim_to_source == pytest.approx(1.0)
    assert rows.trained[2].expression_error == pytest.approx(
        metrics.expression_change_error(face(yaw=16), face(yaw=10), face(200, yaw=2), face(200)))


def test_grid_row_shows_the_widest_mouth_of_the_driver() -> None:
    opened = face(200)
    opened[topo.LIPS_INNER_LOWER, 1] += 8
    driven = [DrivenFrame(ByMode(grey(10), grey(20)), face(200)), DrivenFrame(ByMode(grey(30), grey(40)), opened)]
    row = grid_row(grey(1), driven, S)
    assert row.shape == (S, 4 * S, 3) and row.dtype == np.uint8
    assert (row[:, :S] == 1).all() and (row[:, 2 * S:3 * S] == 30).all() and (row[:, 3 * S:] == 40).all()
    assert row[:, S:2 * S].any()  # the driver's landmarks drawn
