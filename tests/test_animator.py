import numpy as np
import pytest

from enliven.animation.animator import Animator, AnimatorConfig
from enliven.engine.canonical import rotation_from_angles
from enliven.engine.errors import NoFaceError, ShapeError


def turned(points: np.ndarray, yaw: float) -> np.ndarray:
    """The driver's landmarks turned by ``yaw`` degrees about their centre."""
    c = points.mean(0)
    return ((points - c) @ rotation_from_angles(yaw, 0, 0).T + c).astype(np.float32)


@pytest.fixture()
def animator(astronaut):
    with Animator(AnimatorConfig(output="crop", engine="analytic")) as a:
        a.prepare(astronaut)
        yield a


def test_zero_motion_gives_back_the_source_crop(animator, astronaut_face):
    for i in range(5):
        out = animator.step_landmarks(astronaut_face.landmarks, t=i / 30)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - animator.source.crop).mean() < 1.0


def test_warper_and_generator_provider_are_read_only_views(animator):
    assert animator.generator_provider is None  # analytic: no generator
    assert animator.warper.size_px == 256
    with pytest.raises(AttributeError):
        animator.warper = None
    fresh = Animator(AnimatorConfig(engine="analytic"))
    with pytest.raises(RuntimeError, match="prepare"):
        _ = fresh.warper


def test_trained_mode_stays_close_to_the_source_at_zero_motion(astronaut, astronaut_face):
    with Animator(AnimatorConfig(output="crop")) as a:  # the default: the shipped refiner
        a.prepare(astronaut)
        for i in range(3):
            out = a.step_landmarks(astronaut_face.landmarks, t=i / 30)
        assert a.last.timings_ms["generator"] > 0
        assert np.abs(out.astype(int) - a.source.crop).mean() < 3.0


def test_face_lost_eases_to_neutral_and_returns_without_a_jump(animator, astronaut_face):
    drv = astronaut_face.landmarks
    neutral = animator.source.points
    t = 0.0
    for _ in range(5):  # neutral reference, then a 20 degree turn
        animator.step_landmarks(drv, t)
        t += 1 / 30
    for _ in range(10):
        animator.step_landmarks(turned(drv, 20), t)
        t += 1 / 30
    far = np.abs(animator.last.driven_points - neutral).max()
    assert far > 10
    moves = []
    for _ in range(15):  # half a second without a face
        prev = animator.last.driven_points
        animator.step_landmarks(None, t)
        t += 1 / 30
        moves.append(np.abs(animator.last.driven_points - prev).max())
        assert not animator.last.face_found
    assert np.abs(animator.last.driven_points - neutral).max() < 0.1 * far  # back to neutral
    assert max(moves) < 0.35 * far  # eased, not snapped
    for _ in range(10):  # the face comes back turned: blend in, no jump
        prev = animator.last.driven_points
        animator.step_landmarks(turned(drv, 20), t)
        t += 1 / 30
        assert np.abs(animator.last.driven_points - prev).max() < 0.5 * far
    assert np.abs(animator.last.driven_points - neutral).max() > 0.9 * far


def test_real_frames_give_photo_sized_output(astronaut):
    with Animator() as a:
        a.prepare(astronaut)
        out = a.step(astronaut, t=0.0)
        assert out.shape == astronaut.shape and a.last.face_found
        out = a.step(np.zeros_like(astronaut), t=0.04)  # face lost: the stream goes on
        assert out.shape == astronaut.shape and not a.last.face_found
        assert set(a.last.timings_ms) == {"landmarks", "motion", "warp", "generator", "patches", "relight", "paste_back"}
        with pytest.raises(ShapeError):
            a.step(np.zeros((10, 10), np.uint8))


def test_prepare_refuses_a_photo_without_a_face():
    with Animator() as a:
        with pytest.raises(NoFaceError):
            a.prepare(np.full((300, 300, 3), 128, np.uint8))
        with pytest.raises(RuntimeError):
            a.step_landmarks(None)


def test_step_landmarks_smooths_on_request_as_step_does(astronaut):
    """Raw landmarks with smooth=True drive the Animator exactly as step() drives it from the frames."""
    from enliven.engine.landmarks import LandmarkTracker

    frames = [np.roll(astronaut, shift, axis=1) for shift in (0, 4, 9, 5)]
    cfg = AnimatorConfig(output="crop", engine="analytic")
    with Animator(cfg) as by_frame, Animator(cfg) as by_points, LandmarkTracker(smooth=False) as raw:
        by_frame.prepare(astronaut)
        by_points.prepare(astronaut)
        for i, frame in enumerate(frames):
            a = by_frame.step(frame, t=i / 30)
            b = by_points.step_landmarks(raw.track(frame, i / 30), t=i / 30, smooth=True)
            np.testing.assert_allclose(by_points.last.driver_points, by_frame.last.driver_points, atol=1e-3)
            assert np.abs(a.astype(int) - b).mean() < 0.5
        unsmoothed = by_points.step_landmarks(raw.track(frames[0], 4 / 30), t=4 / 30)
        smoothed = by_frame.step(frames[0], t=4 / 30)
        assert np.abs(by_points.last.driver_points - by_frame.last.driver_points).max() > 0.5, \
            "without smooth=True the raw landmarks go through unchanged"
        assert unsmoothed.shape == smoothed.shape
