"""A frozen driving frame gives a still output (both engines)."""
import numpy as np
import pytest

from enliven.evaluate.regions import still_drift


@pytest.mark.parametrize("engine", ["analytic", "trained"])
def test_frozen_driver_gives_a_still_output(astronaut, engine):
    """Mean |o_t - o_(t-1)| after the first second: 0.29/255 before repeated frames were held
    (MediaPipe's tracking swings ~1 px every other frame on one image), 0 now."""
    from enliven.animation.animator import Animator, AnimatorConfig
    from enliven.fixtures import driving_frames

    frame = driving_frames(stride=5)[0]
    with Animator(AnimatorConfig(output="crop", engine=engine)) as anim:
        anim.prepare(astronaut)
        outs = [anim.step(frame.copy(), t=i / 25).copy() for i in range(50)]
        assert anim.last.face_found
    assert still_drift(outs, 25.0) < 0.01


def test_repeated_frames_get_the_previous_landmarks():
    from enliven.engine.landmarks import LandmarkTracker
    from enliven.fixtures import driving_frames

    frame = driving_frames(stride=5)[0]
    with LandmarkTracker() as tracker:
        first = tracker.track(frame, 0.0)
        again = tracker.track(frame.copy(), 0.04)
        assert first is not None and again is not None and np.array_equal(first, again)
        again[0] += 5  # the caller's copy, not the tracker's state
        assert np.array_equal(tracker.track(frame, 0.08), first)
        other = frame.copy()
        other[0, 0] += 1  # a changed frame is measured again
        assert tracker.track(other, 0.12) is not None


def test_still_drift_metric():
    a = np.zeros((8, 8, 3), np.uint8)
    b = a + 2
    assert still_drift([b, a, a, a], fps=2.0, settle_s=1.0) == 0.0
    assert still_drift([a, a, b, a], fps=1.0, settle_s=1.0) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        still_drift([a, a], fps=25.0)
