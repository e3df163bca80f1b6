"""PipelinedAnimator and LandmarkProcess: same frames as the serial Animator, clean lifecycle, clear failures."""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from enliven.animation.animator import Animator, AnimatorConfig
from enliven.engine.errors import ShapeError
from enliven.animation.pipeline import LandmarkProcess, LandmarkProcessError, PipelinedAnimator

CONFIG = AnimatorConfig(engine="analytic")
GREY = np.full((480, 640, 3), 128, np.uint8)  # no face


@pytest.fixture(scope="module")
def clip() -> list[np.ndarray]:
    """12 driving frames, then 3 without a face, then 5 with the face back: (480, 640, 3) uint8 each.

    From 0.8 s of the built-in motion on, where the head turns: its first 0.5 s are identical frames,
    which now get identical landmarks (and outputs), so frame order could not be told apart there.
    """
    from enliven.fixtures import driving_frames

    frames = driving_frames(640, 480, fps=30.0)[24:]
    return [*frames[:12], GREY, GREY, GREY, *frames[12:17]]


def _serial(photo: np.ndarray, clip: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    outs, points = [], []
    with Animator(CONFIG) as a:
        a.prepare(photo)
        for i, frame in enumerate(clip):
            outs.append(a.step(frame, t=i / 30))
            points.append(a.last.driver_points)
    return outs, points


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _shm_exists(name: str) -> bool:
    return os.path.exists(f"/dev/shm/{name.lstrip('/')}")


@pytest.mark.timeout(60)
def test_pipelined_outputs_equal_the_serial_ones_in_order(astronaut, clip):
    serial, serial_points = _serial(astronaut, clip)
    outs, points, found = [], [], []
    with PipelinedAnimator(Animator(CONFIG)) as p:
        p.prepare(astronaut)
        for i, frame in enumerate(clip):
            out = p.step(frame, t=i / 30)
            if i == 0:
                assert out is None  # one frame of latency
                continue
            assert out is not None
            outs.append(out)
            points.append(p.last.driver_points)
            found.append(p.last.face_found)
        outs.append(p.flush())
        points.append(p.last.driver_points)
        found.append(p.last.face_found)
        assert p.flush() is None
        assert {"landmarks", "landmark_wait", "warp", "paste_back"} <= set(p.last.timings_ms)
    assert len(outs) == len(serial)
    for i, (out, ref, pts, ref_pts) in enumerate(zip(outs, serial, points, serial_points)):
        assert out.shape == ref.shape and out.dtype == np.uint8
        assert np.abs(out.astype(np.int16) - ref).mean() < 1.0, f"frame {i}"
        assert (pts is None) == (ref_pts is None), f"frame {i}"
        if pts is not None:
            assert pts.shape == (478, 3) and pts.dtype == np.float32
            assert np.abs(pts - ref_pts).max() < 1e-3, f"frame {i}"
    assert found == [True] * 12 + [False] * 3 + [True] * 5  # the grey frames take the no-face path
    # order: each output is nearer its own serial frame than its neighbours (the face moves)
    assert np.abs(outs[5].astype(np.int16) - serial[5]).mean() < np.abs(outs[5].astype(np.int16) - serial[9]).mean()


@pytest.mark.timeout(60)
def test_close_leaves_no_process_and_no_shared_memory(clip):
    with LandmarkProcess(CONFIG.smoothing) as lp:
        lp.start()
        pid = lp.pid
        assert pid is not None and not _gone(pid)
        assert lp.track(clip[0], 0.0) is not None
        first = lp.shm_names
        lp.submit(clip[1], 1 / 30)
        small = np.ascontiguousarray(clip[2][::2, ::2])  # a new frame size: a new ring
        lp.submit(small, 2 / 30)
        assert len(lp.shm_names) == 2 and _shm_exists(first[0])  # the old ring waits for its frame
        lp.result()
        assert not _shm_exists(first[0])  # ... and goes once that is back
        lp.result()
        names = lp.shm_names
        assert len(names) == 1 and _shm_exists(names[0])
        lp.submit(clip[3], 3 / 30)  # close with a frame in flight
    assert lp.pid is None and lp.shm_names == []
    assert _gone(pid)
    assert not any(_shm_exists(n) for n in (*first, *names))


@pytest.mark.timeout(60)
def test_a_killed_child_gives_a_clear_error_not_a_hang(astronaut, clip):
    with PipelinedAnimator(Animator(CONFIG), LandmarkProcess(CONFIG.smoothing, result_timeout_s=5.0)) as p:
        p.prepare(astronaut)
        assert p.step(clip[0], 0.0) is None
        assert p.step(clip[1], 1 / 30) is not None
        pid = p.landmarks.pid
        names = p.landmarks.shm_names
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(LandmarkProcessError, match="killed by signal 9"):
            for i in range(2, 5):  # the frame in flight may have been answered before the kill
                p.step(clip[i], i / 30)
        assert time.monotonic() - t0 < 5.0
        with pytest.raises(LandmarkProcessError, match="killed"):  # stays failed until closed
            p.step(clip[5], 5 / 30)
    assert _gone(pid)
    assert not any(_shm_exists(n) for n in names)


@pytest.mark.timeout(60)
def test_a_stuck_child_times_out(clip):
    with LandmarkProcess(CONFIG.smoothing, result_timeout_s=1.0) as lp:
        lp.start()
        pid = lp.pid
        os.kill(pid, signal.SIGSTOP)
        lp.submit(clip[0], 0.0)
        with pytest.raises(LandmarkProcessError, match="within 1 s"):
            lp.result()
    assert _gone(pid)


def test_bad_input_is_refused_before_any_process_starts(astronaut):
    lp = LandmarkProcess(slots=2)
    with pytest.raises(ShapeError):
        lp.submit(np.zeros((480, 640), np.uint8), 0.0)
    with pytest.raises(RuntimeError, match="no frame is pending"):
        lp.result()
    assert lp.pid is None
    p = PipelinedAnimator(Animator(CONFIG), lp)
    with pytest.raises(RuntimeError, match="prepare"):
        p.step(GREY, 0.0)
    assert p.flush() is None and lp.pid is None
    with pytest.raises(ValueError):
        LandmarkProcess(slots=0)
    with pytest.raises(ValueError, match="2 frames in flight"):
        PipelinedAnimator(Animator(CONFIG), LandmarkProcess(slots=1))


@pytest.mark.timeout(60)
def test_slots_bound_the_frames_in_flight(clip):
    with LandmarkProcess(CONFIG.smoothing, slots=2) as lp:
        lp.submit(clip[0], 0.0)
        lp.submit(clip[1], 1 / 30)
        with pytest.raises(RuntimeError, match="in flight"):
            lp.submit(clip[2], 2 / 30)
        assert [lp.result().t, lp.result().t] == [0.0, 1 / 30]
