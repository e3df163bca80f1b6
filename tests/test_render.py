"""draw_landmarks: the 3-channel face-mesh drawing."""
from __future__ import annotations

import time

import numpy as np
import pytest

from enliven.engine import procedural, topology
from enliven.engine.canonical import load_canonical
from enliven.engine.errors import ShapeError
from enliven.engine.render import draw_landmarks

SIZE = 256
IOD_PX = 0.18 * SIZE


def _posed(shape: np.ndarray) -> np.ndarray:
    return procedural.pose_shape(shape, 0.0, 0.0, 0.0, procedural.builtin_center_px(SIZE), IOD_PX)


@pytest.fixture(scope="module")
def neutral() -> np.ndarray:
    return _posed(load_canonical().points)


def _at(img: np.ndarray, point: np.ndarray, channel: int) -> int:
    x, y = np.round(point[:2]).astype(int)
    return int(img[y, x, channel])


def test_shape_and_dtype(neutral: np.ndarray) -> None:
    img = draw_landmarks(neutral, SIZE)
    assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8
    wide = draw_landmarks(neutral, (200, 300))
    assert wide.shape == (200, 300, 3)


def test_channels_where_expected(neutral: np.ndarray) -> None:
    img = draw_landmarks(neutral, SIZE)
    contours, regions, irises = img[..., 0], img[..., 1], img[..., 2]
    assert all(c.any() for c in (contours, regions, irises))
    # Contours pass through the oval, brow, nose and outer-lip points.
    for i in (topology.FOREHEAD, topology.CHIN, topology.RIGHT_CHEEK_EDGE, 105, 4, 0, 17):
        assert _at(img, neutral[i], 0) > 100, i
    # Eyes are filled, irises filled, both at the iris centres.
    for centre in (468, 473):
        assert _at(img, neutral[centre], 1) == 255
        assert _at(img, neutral[centre], 2) == 255
    # Nothing far outside the face.
    lo, hi = neutral[:, :2].min(axis=0) - 3, neutral[:, :2].max(axis=0) + 3
    ys, xs = np.nonzero(img.any(axis=2))
    assert xs.min() >= lo[0] and xs.max() <= hi[0] and ys.min() >= lo[1] and ys.max() <= hi[1]
    # Contours are lines, not fills: the cheek between the eye and the mouth is empty.
    assert _at(img, neutral[205], 0) == 0
    # Irises stay inside the eyes.
    assert (irises <= regions).all()


def test_open_mouth_is_filled(neutral: np.ndarray) -> None:
    canon = load_canonical().points
    open_ = _posed(procedural.jaw_open(canon, 1.0))
    middle = (open_[topology.UPPER_LIP_INNER] + open_[topology.LOWER_LIP_INNER]) / 2
    assert _at(draw_landmarks(open_, SIZE), middle, 1) == 255
    below_nose = slice(int(neutral[topology.NOSE_TIP, 1]) + 5, SIZE)  # the mouth's rows, not the eyes'
    mouth_area_closed = draw_landmarks(neutral, SIZE)[below_nose, :, 1].astype(int).sum()
    mouth_area_open = draw_landmarks(open_, SIZE)[below_nose, :, 1].astype(int).sum()
    assert mouth_area_open > 10 * mouth_area_closed


def test_closed_eyes_hide_the_irises() -> None:
    closed = _posed(procedural.blink(load_canonical().points, 1.0))
    img = draw_landmarks(closed, SIZE)
    assert not img[..., 2].any()
    half = draw_landmarks(_posed(procedural.blink(load_canonical().points, 0.5)), SIZE)[..., 2].astype(int).sum()
    assert 0 < half < draw_landmarks(_posed(load_canonical().points), SIZE)[..., 2].astype(int).sum()
    for centre in (468, 473):
        assert _at(img, closed[centre], 2) == 0


def test_two_and_three_columns_agree(neutral: np.ndarray) -> None:
    np.testing.assert_array_equal(draw_landmarks(neutral, SIZE), draw_landmarks(neutral[:, :2], SIZE))


def test_thickness(neutral: np.ndarray) -> None:
    thin = draw_landmarks(neutral, SIZE)[..., 0].astype(int).sum()
    thick = draw_landmarks(neutral, SIZE, thickness=3)[..., 0].astype(int).sum()
    assert thick > 2 * thin


def test_points_off_the_image_are_clipped(neutral: np.ndarray) -> None:
    img = draw_landmarks(neutral + np.array([200.0, 0.0, 0.0]), SIZE)
    assert img.shape == (SIZE, SIZE, 3)
    far = draw_landmarks(neutral * 1e6, SIZE)  # absurd coordinates must not crash
    assert far.shape == (SIZE, SIZE, 3)
    assert not draw_landmarks(neutral + 10 * SIZE, SIZE).any()


@pytest.mark.parametrize("points", [np.zeros((468, 3)), np.zeros((478, 4)), np.zeros((478,)),
                                    np.full((478, 3), np.nan)])
def test_rejects_bad_points(points: np.ndarray) -> None:
    with pytest.raises(ShapeError):
        draw_landmarks(points, SIZE)


@pytest.mark.parametrize("size", [0, (0, 10), (10,), "big"])
def test_rejects_bad_size(neutral: np.ndarray, size) -> None:
    with pytest.raises(ShapeError):
        draw_landmarks(neutral, size)


def test_rejects_bad_thickness(neutral: np.ndarray) -> None:
    with pytest.raises(ShapeError):
        draw_landmarks(neutral, SIZE, thickness=0)


def test_fast(neutral: np.ndarray) -> None:
    draw_landmarks(neutral, SIZE)
    times = []
    for _ in range(30):
        t0 = time.perf_counter()
        draw_landmarks(neutral, SIZE)
        times.append(time.perf_counter() - t0)
    assert np.median(times) < 1e-3
