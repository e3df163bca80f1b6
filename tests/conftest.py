"""Shared fixtures: the built-in photo and its detected face (computed once per test session)."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("GLOG_minloglevel", "2")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from enliven.engine.defaults import builtin_photo

    return builtin_photo()


@pytest.fixture(scope="session")
def astronaut_face(astronaut):
    from enliven.engine.landmarks import detect_photo_face

    return detect_photo_face(astronaut)
