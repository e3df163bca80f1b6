"""The evaluation's pure measures give known values on constructed inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest

from enliven.engine import topology as topo
from enliven.engine.canonical import load_canonical, rotation_from_angles
from enliven.engine.errors import EnlivenError
from enliven.evaluate import metrics


def image(seed: int = 0, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = cv2_blur(rng.integers(0, 256, (size, size, 3)).astype(np.float64))
    return np.clip(base, 0, 255).astype(np.uint8)


def cv2_blur(x: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(x, (7, 7), 2.0)


def face(size: float = 200.0, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    pts = load_canonical().points @ rotation_from_angles(yaw, pitch, roll).T
    return pts * (size / 5) + [size / 2, size / 2, 0]


def test_identical_images_score_perfectly() -> None:
    a = image()
    assert metrics.l1_error(a, a) == 0.0
    assert metrics.psnr(a, a) == 100.0
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-9)
    assert metrics.temporal_flicker([a, a, a]) == 0.0


def test_constant_offset_gives_known_l1_and_psnr() -> None:
    a = np.full((32, 32, 3), 100, np.uint8)
    b = a + 10
    assert metrics.l1_error(a, b) == pytest.approx(10 / 255)
    assert metrics.psnr(a, b) == pytest.approx(-10 * math.log10((10 / 255) ** 2))
    # a constant offset keeps the structure: SSIM's structure term is 1, only luminance drops a little
    assert 0.95 < metrics.ssim(a, b) < 1.0


def test_shifted_image_scores_worse_than_itself() -> None:
    a = image(1)
    shifted = np.roll(a, 3, axis=1)
    assert metrics.l1_error(a, shifted) > 0.01
    assert metrics.psnr(a, shifted) < 40
    assert metrics.ssim(a, shifted) < 0.9
    # flicker of a sequence that jumps by the shift and back
    assert metrics.temporal_flicker([a, shifted, a]) == pytest.approx(metrics.l1_error(a, shifted))
    # ... and none beyond the reference when the reference moves the same way
    assert metrics.temporal_flicker([a, shifted, a], [a, shifted, a]) == 0.0


def test_masks_exclude_pixels() -> None:
    a = np.zeros((16, 16, 3), np.uint8)
    b = a.copy()
    b[:, :8] = 255
    mask = np.zeros((16, 16))
    mask[:, 8:] = 1
    assert metrics.l1_error(a, b, mask) == 0.0
    assert metrics.psnr(a, b, mask) == 100.0
    with pytest.raises(EnlivenError):
        metrics.l1_error(a, b, np.ones((4, 4)))


def test_keypoint_distance_of_shifted_landmarks() -> None:
    pts = face()
    assert metrics.keypoint_distance(pts, pts) == 0.0
    assert metrics.keypoint_distance(pts, pts + [3.0, 4.0, 0.0]) == pytest.approx(5.0)


def test_expression_error_ignores_pose_and_sees_an_open_mouth() -> None:
    pts = face()
    turned = face(yaw=20, roll=10)
    assert metrics.expression_error(pts, turned) == pytest.approx(0.0, abs=1e-6)
    assert metrics.expression_error(pts, pts * 1.5) == pytest.approx(0.0, abs=1e-6)  # scale is pose too
    opened = pts.copy()
    opened[topo.LIPS_INNER_LOWER, 1] += 20
    assert metrics.expression_error(pts, opened) > 0.01


def test_head_angles_recover_the_rotation() -> None:
    np.testing.assert_allclose(metrics.head_angles(face(yaw=15, pitch=-5, roll=8)), [15, -5, 8], atol=1e-6)


def test_face_and_mouth_masks() -> None:
    pts = face(128)
    m = metrics.face_mask(pts, 128)
    assert m.shape == (128, 128) and m[64, 64] == 1.0 and m[0, 0] == 0.0
    mouth = metrics.mouth_mask(pts, 128)
    assert 0 < mouth.sum() < m.sum()


def test_region_masks_cover_the_polygon_and_an_edge_band_at_most() -> None:
    import cv2

    def area_and_perimeter(outline: np.ndarray) -> tuple[float, float]:  # shoelace formula, polygon length
        return cv2.contourArea(outline.astype(np.float32)), cv2.arcLength(outline.astype(np.float32), True)

    pts = face(512)
    area, perimeter = area_and_perimeter(pts[topo.FACE_OVAL, :2])
    assert area < metrics.face_mask(pts, 512).sum() < area + perimeter  # antialiasing adds under 1 px of edge
    lips = pts[topo.LIPS_OUTER, :2]
    area, perimeter = area_and_perimeter(lips)
    assert area < metrics.mouth_mask(pts, 512, grow=1.0).sum() < area + perimeter
    area, perimeter = area_and_perimeter(lips.mean(0) + (lips - lips.mean(0)) * 1.3)  # grown x1.3 about the centre
    assert area < metrics.mouth_mask(pts, 512).sum() < area + perimeter


def test_pose_change_error_compares_turns_not_poses() -> None:
    still = face(yaw=5)
    # the output turned by (12, -3, 6) degrees while the driver, elsewhere and smaller, stayed still
    assert metrics.pose_change_error(face(yaw=17, pitch=-3, roll=6), still, face(150) + 40, face(150) + 40) == \
        pytest.approx((12 + 3 + 6) / 3, abs=1e-6)
    # both turned by the same amount from different starting poses and sizes: no error
    assert metrics.pose_change_error(face(yaw=25, pitch=4), face(yaw=5, pitch=4), face(120, yaw=-10),
                                     face(120, yaw=-30)) == pytest.approx(0.0, abs=1e-6)


def test_expression_change_error_compares_changes_since_the_first_frames() -> None:
    closed = face()
    opened = closed.copy()
    opened[topo.LIPS_INNER_LOWER, 1] += 20
    # a driver that does not change: the output's change is the whole error, as expression_error measures it
    assert metrics.expression_change_error(opened, closed, face(150), face(150)) == \
        pytest.approx(metrics.expression_error(opened, closed), rel=1e-9)
    # the same mouth opening on a turned, smaller driver: no error
    drv_closed = face(160, yaw=15)
    drv_opened = drv_closed.copy()
    drv_opened[topo.LIPS_INNER_LOWER] = face(160, yaw=15)[topo.LIPS_INNER_LOWER] + \
        (opened - closed)[topo.LIPS_INNER_LOWER] @ rotation_from_angles(15, 0, 0).T * (160 / 200)
    assert metrics.expression_change_error(opened, closed, drv_opened, drv_closed) == pytest.approx(0.0, abs=1e-4)
    assert metrics.expression_change_error(opened, closed, drv_closed, drv_closed) > 0.01


def test_ssim_of_flat_images_is_the_luminance_term() -> None:
    a, b = np.full((24, 24, 3), 100, np.uint8), np.full((24, 24, 3), 110, np.uint8)
    mx, my, c1 = 100 / 255, 110 / 255, 0.01 ** 2  # no variance: the contrast-structure term is exactly 1
    assert metrics.ssim(a, b) == pytest.approx((2 * mx * my + c1) / (mx * mx + my * my + c1), rel=1e-9)
