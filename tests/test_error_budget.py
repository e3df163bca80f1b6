"""The error budget's regions and oracles (enliven/evaluate/budget.py) on constructed inputs."""
import numpy as np
import pytest

from enliven.engine.canonical import load_canonical
from enliven.engine.procedural import builtin_center_px, jaw_open, pose_shape
from enliven.evaluate import budget as bd
from enliven.evaluate.metrics import face_mask


def _face(shape):
    return pose_shape(shape, 0, 0, 0, builtin_center_px(256), 0.18 * 256)


def _textured(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(40, 200, (256, 256, 3)).astype(np.uint8)


def test_regions_partition_the_face():
    pts = _face(jaw_open(load_canonical().points, 1.0))
    valid = np.ones((256, 256))
    valid[:, :40] = 0  # off-frame pixels belong to no region
    regions = bd.face_regions(pts, valid, 256)
    assert set(regions) == set(bd.REGIONS)
    total = sum(regions.values())
    np.testing.assert_allclose(total, face_mask(pts, 256) * valid, atol=1e-9)
    assert all((m >= -1e-12).all() and m.sum() > 100 for m in regions.values())
    assert regions["mouth"].sum() < regions["rest"].sum()


def test_offset_oracle_removes_a_colour_cast_only():
    truth = _textured(0)
    cast = (truth.astype(np.int16) + np.array([12, -7, 3])).astype(np.uint8)
    mask = np.ones((256, 256))
    np.testing.assert_array_equal(bd.offset_oracle(cast, truth, mask), truth)
    other = _textured(1)  # a different image keeps its structural error
    fixed = bd.offset_oracle(other, truth, mask)
    assert np.abs(fixed.astype(int) - truth).mean() > 20


def test_interior_oracle_replaces_the_interior_only():
    truth, out = _textured(2), _textured(3)
    interior = np.zeros((256, 256))
    interior[100:140, 90:170] = 1
    got = bd.interior_oracle(out, truth, interior)
    np.testing.assert_array_equal(got[100:140, 90:170], truth[100:140, 90:170])
    np.testing.assert_array_equal(got[:100], out[:100])


def test_budgets_of_a_frame_and_their_summary():
    pts = _face(jaw_open(load_canonical().points, 1.0))
    truth = _textured(4)
    out = truth.copy()
    regions = bd.face_regions(pts, np.ones((256, 256)), 256)
    out[regions["mouth"] > 0.5] = 0  # all of the error in the mouth
    row = bd.face_budget(out, truth, pts, np.ones((256, 256)))
    assert row["se_eyes"] == 0  # the others share only the mouth's antialiased edge
    assert row["se_mouth"] > 50 * (row["se_rest"] + row["se_outline"])
    assert row["psnr_face_offset_oracle"] > row["psnr_face"]
    mouth = bd.mouth_budget(out, truth, pts, np.ones((256, 256)))
    assert 0 < mouth["interior_share"] < 1
    assert mouth["l1_mouth_open_interior_oracle"] < mouth["l1_mouth_open"]
    s = bd.summarise([row, row], [mouth])
    assert s["regions"]["mouth"]["error_share"] > 0.98
    assert sum(v["area_share"] for v in s["regions"].values()) == pytest.approx(1.0)
    assert s["face_frames"] == 2 and s["open_mouth_frames"] == 1
    assert "inside the inner lips" in bd.markdown(s)
