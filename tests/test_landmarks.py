import cv2
import numpy as np
import pytest

from enliven.engine.errors import FaceTooSmallError, NoFaceError, ShapeError
from enliven.engine.landmarks import LandmarkSmoother, LandmarkTracker, OneEuroFilter, detect_photo_face


def test_one_euro_removes_jitter_at_rest_and_follows_fast_moves():
    rng = np.random.default_rng(0)
    f = OneEuroFilter(min_cutoff_hz=1.5, beta=0.01)
    still = [f(np.array([100.0]) + rng.normal(0, 1.0, 1), i / 30)[0] for i in range(300)]
    assert np.std(still[30:]) < 0.45  # raw jitter std is 1.0 px: at least 2.2x steadier
    f.reset()
    ramp = [f(np.array([6.0 * i]), i / 30)[0] for i in range(60)]  # 180 px/s
    assert 6.0 * 59 - ramp[-1] < 10.0  # lags by less than 2 frames of motion
    f.reset()
    assert f(np.array([5.0]), 0.0)[0] == 5.0  # the first sample passes unchanged


def test_photo_face_is_found_with_its_landmarks(astronaut, astronaut_face):
    assert astronaut_face.landmarks.shape == (478, 3) and astronaut_face.landmarks.dtype == np.float32
    assert astronaut_face.face_count == 1
    x0, y0, x1, y1 = astronaut_face.box
    nose = astronaut_face.landmarks[1]
    assert x0 < nose[0] < x1 and y0 < nose[1] < y1


def test_largest_of_several_faces_is_used_and_counted(astronaut):
    canvas = np.full((600, 1000, 3), 200, np.uint8)
    canvas[50:550, 20:520] = cv2.resize(astronaut, (500, 500))
    canvas[200:500, 600:900] = cv2.resize(astronaut[:, ::-1], (300, 300))
    face = detect_photo_face(canvas)
    assert face.face_count == 2
    assert face.landmarks[:, 0].max() < 520  # the big face on the left


def test_no_face_and_too_small_face_are_refused(astronaut):
    with pytest.raises(NoFaceError):
        detect_photo_face(np.full((400, 400, 3), 120, np.uint8))
    tiny = np.full((300, 300, 3), 200, np.uint8)
    tiny[90:210, 90:210] = cv2.resize(astronaut, (120, 120), interpolation=cv2.INTER_AREA)  # a ~25 px face
    with pytest.raises(FaceTooSmallError):
        detect_photo_face(tiny)
    with pytest.raises(ShapeError):
        detect_photo_face(np.zeros((100, 100), np.uint8))


def test_tracker_reports_lost_faces(astronaut):
    with LandmarkTracker() as tracker:
        assert tracker.track(astronaut, 0.0) is not None
        assert tracker.track(np.zeros_like(astronaut), 0.033) is None
        again = tracker.track(astronaut, 0.066)
        assert again is not None and again.shape == (478, 3)


def test_smoother_is_the_trackers_smoothing(astronaut):
    """LandmarkSmoother on raw landmarks gives what the smoothing tracker gives on the same frames."""
    frames = [np.roll(astronaut, shift, axis=1) for shift in (0, 3, 7, 4, 0)] + [np.zeros_like(astronaut), astronaut]
    smoother = LandmarkSmoother()
    with LandmarkTracker() as smooth, LandmarkTracker(smooth=False) as raw:
        for i, frame in enumerate(frames):
            t = i / 30
            expected, measured = smooth.track(frame, t), raw.track(frame, t)
            got = smoother(measured, t)
            if expected is None:
                assert got is None and measured is None
            else:
                assert got is not None and got.dtype == np.float32
                np.testing.assert_allclose(got, expected, atol=1e-3)
    assert i == 6
