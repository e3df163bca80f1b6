"""The canonical face asset, its loader and the head-pose angle conventions."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from enliven.engine import topology
from enliven.engine.canonical import (CANONICAL_FACE_PATH, CanonicalFace, angles_from_rotation, load_canonical,
                                      rotation_from_angles)
from enliven.engine.errors import ModelFileError, ShapeError

FLIP_X = np.array([-1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def face() -> CanonicalFace:
    return load_canonical()


def test_shapes_and_dtypes(face: CanonicalFace) -> None:
    assert face.points.shape == (topology.NUM_LANDMARKS, 3) and face.points.dtype == np.float64
    assert face.mirror.shape == (topology.NUM_LANDMARKS,) and face.mirror.dtype == np.int64
    assert np.isfinite(face.points).all()


def test_cached_and_read_only(face: CanonicalFace) -> None:
    assert load_canonical() is face
    with pytest.raises(ValueError):
        face.points[0, 0] = 1.0
    with pytest.raises(ValueError):
        face.mirror[0] = 1


def test_asset_is_small_and_typed() -> None:
    assert CANONICAL_FACE_PATH.stat().st_size < 20_000
    with np.load(CANONICAL_FACE_PATH) as data:
        assert set(data.files) == {"points", "mirror"}
        assert data["points"].dtype == np.float32 and data["mirror"].dtype == np.int16


def test_mirror_is_an_involution(face: CanonicalFace) -> None:
    n = topology.NUM_LANDMARKS
    assert np.array_equal(np.sort(face.mirror), np.arange(n))
    assert np.array_equal(face.mirror[face.mirror], np.arange(n))


def test_mirror_pairs_known_points(face: CanonicalFace) -> None:
    m = face.mirror
    assert m[468] == 473 and m[473] == 468  # iris centres
    assert set(m[topology.RIGHT_IRIS]) == set(topology.LEFT_IRIS)
    assert set(m[topology.RIGHT_EYE]) == set(topology.LEFT_EYE)
    assert set(m[topology.RIGHT_EYEBROW]) == set(topology.LEFT_EYEBROW)
    assert m[topology.RIGHT_EYE_OUTER] == topology.LEFT_EYE_OUTER
    assert m[topology.MOUTH_RIGHT_CORNER] == topology.MOUTH_LEFT_CORNER
    assert m[topology.RIGHT_CHEEK_EDGE] == topology.LEFT_CHEEK_EDGE
    for midline in (topology.NOSE_TIP, topology.CHIN, topology.FOREHEAD, topology.UPPER_LIP_INNER,
                    topology.LOWER_LIP_INNER, 0, 17, 168):
        assert m[midline] == midline
    assert set(m[topology.RIGID]) == set(topology.RIGID)  # so the rigid mean lies on the midline


def test_shape_is_mirror_symmetric(face: CanonicalFace) -> None:
    p = face.points
    np.testing.assert_allclose(p[face.mirror] * FLIP_X, p, atol=1e-6)
    midline = face.mirror == np.arange(len(p))
    assert midline.sum() >= 20
    np.testing.assert_allclose(p[midline, 0], 0.0, atol=1e-6)


def test_normalisation(face: CanonicalFace) -> None:
    p = face.points
    assert topology.interocular_distance(p) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(p[topology.RIGID].mean(axis=0), 0.0, atol=1e-6)


def test_frontal_and_axes(face: CanonicalFace) -> None:
    p = face.points
    right, left = topology.eye_centers(p)
    assert left[0] - right[0] == pytest.approx(1.0, abs=1e-6)  # x from the subject's right eye to their left
    np.testing.assert_allclose(right[1:], left[1:], atol=1e-6)  # eye line along x
    assert p[topology.FOREHEAD, 1] < p[topology.NOSE_TIP, 1] < p[topology.CHIN, 1]  # y down
    assert p[topology.NOSE_TIP, 2] < p[topology.RIGHT_CHEEK_EDGE, 2] - 1.0  # z away: the nose is closest
    # Frontal pitch: the forehead -> chin line is within a few degrees of the image plane.
    d = p[topology.CHIN] - p[topology.FOREHEAD]
    assert abs(np.degrees(np.arctan2(d[2], d[1]))) < 10.0


def test_neutral_expression(face: CanonicalFace) -> None:
    p = face.points
    assert topology.mouth_opening(p) < 0.03
    right, left = topology.eye_opening(p)
    assert right == pytest.approx(left) and 0.06 < right < 0.12
    assert (p[topology.LIPS_INNER_LOWER, 1] >= p[topology.LIPS_INNER_UPPER, 1]).all()


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        load_canonical(tmp_path / "nope.npz")


def test_corrupt_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.npz"
    path.write_bytes(b"this is not a zip file")
    with pytest.raises(ModelFileError, match="unreadable"):
        load_canonical(path)


@pytest.mark.parametrize("change", ["points_shape", "missing_key", "mirror_not_involution", "nan"])
def test_invalid_contents_raise(tmp_path: Path, change: str) -> None:
    good = load_canonical()
    points, mirror = good.points.astype(np.float32), good.mirror.astype(np.int16)
    arrays = {"points": points, "mirror": mirror}
    if change == "points_shape":
        arrays["points"] = points[:468]
    elif change == "missing_key":
        del arrays["mirror"]
    elif change == "mirror_not_involution":
        bad = mirror.copy()
        bad[[0, 1, 2]] = bad[[1, 2, 0]]
        arrays["mirror"] = bad
    else:
        bad_points = points.copy()
        bad_points[5, 1] = np.nan
        arrays["points"] = bad_points
    path = tmp_path / f"{change}.npz"
    np.savez(path, **arrays)
    with pytest.raises(ModelFileError):
        load_canonical(path)


def test_angles_round_trip() -> None:
    rng = np.random.default_rng(0)
    for yaw, pitch, roll in rng.uniform(-80.0, 80.0, size=(20, 3)):
        r = rotation_from_angles(yaw, pitch, roll)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(r) == pytest.approx(1.0)
        np.testing.assert_allclose(angles_from_rotation(r), (yaw, pitch, roll), atol=1e-9)


def test_angle_sign_conventions() -> None:
    forward, up = np.array([0.0, 0.0, -1.0]), np.array([0.0, -1.0, 0.0])
    assert (rotation_from_angles(20, 0, 0) @ forward)[0] > 0.3  # yaw > 0: nose to the image right
    assert (rotation_from_angles(0, 20, 0) @ forward)[1] > 0.3  # pitch > 0: nose down
    assert (rotation_from_angles(0, 0, 20) @ up)[0] > 0.3  # roll > 0: top of the head to the image right
    np.testing.assert_allclose(rotation_from_angles(0, 0, 0), np.eye(3))


def test_angles_from_rotation_rejects_bad_shape() -> None:
    with pytest.raises(ShapeError):
        angles_from_rotation(np.eye(4))
