"""Pipelining: the landmarks of frame n in a child process while this process animates frame n-1.

MediaPipe's Python wrapper holds the GIL, so a thread cannot overlap the landmarks with the warp
(DESIGN.md); a second process can. Frames go to the child through a small ring of shared-memory
slots, never pickled; only small messages (slot, time, shape; the (478, 3) float32 landmarks back)
go through a pipe.

    parent:  submit(frame n) -> [copy into slot n % slots] --("frame", seq, slot, t)--> child
    child:   LandmarkTracker.track(slot) --("points", seq, points | None, ms)--> parent
    parent:  result() of frame n-1 -> Animator.step_landmarks -> output frame n-1

The cost is one frame of added latency (~33 ms at 30 fps).
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from multiprocessing.shared_memory import SharedMemory
from typing import Any, NamedTuple

import numpy as np

from .animator import Animator, Source, StepInfo
from ..engine.errors import EnlivenError, ShapeError
from ..engine.landmarks import LandmarkTracker, SmoothingConfig, native_logs_silenced

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0  # the child imports MediaPipe and builds FaceMesh (~1 s; more on a busy machine)
RESULT_TIMEOUT_S = 10.0  # one frame's landmarks take milliseconds: this long means the child is stuck
CLOSE_TIMEOUT_S = 2.0  # how long close() waits for the child to exit before terminating it
RING_SLOTS = 3  # frame slots in shared memory; at most this many frames in flight
# Thread pools of the libraries the child loads (numpy's BLAS, OpenCV, TFLite via OpenMP): one each,
# so the child takes one core and leaves the other to the animating process.
CHILD_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

_env_lock = threading.Lock()


class LandmarkProcessError(EnlivenError):
    """The landmark process died, stopped answering or failed on a frame."""

    code = "landmark_process"


class LandmarkResult(NamedTuple):
    """The landmarks of one submitted frame."""

    points: np.ndarray | None  # (478, 3) float32 pixels of the frame, smoothed; None = no face
    t: float  # the frame's time, seconds, as submitted
    measure_ms: float  # time the child spent on this frame's landmarks
    wait_ms: float  # time result() blocked waiting for it (0 when the child was ahead)


def _check_frame(frame: np.ndarray) -> None:
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ShapeError(f"expected an (H, W, 3) uint8 RGB frame; got {frame.shape} {frame.dtype}")


@contextlib.contextmanager
def _child_thread_env() -> Iterator[None]:
    """Set CHILD_THREAD_ENV while a child is spawned (it copies this process's environment), then restore it.

    The variables must be set before the child imports numpy, which happens while it unpickles its
    target, before any of our code runs there.
    """
    with _env_lock:
        saved = {k: os.environ.get(k) for k in CHILD_THREAD_ENV}
        os.environ.update(CHILD_THREAD_ENV)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


class _Ring:
    """Frame slots in one shared-memory segment: (slots, H, W, 3) uint8, created by the parent."""

    def __init__(self, slots: int, shape: tuple[int, int, int]) -> None:
        self.shape = shape
        self.shm = SharedMemory(create=True, size=slots * int(np.prod(shape)))
        self.frames: np.ndarray | None = np.ndarray((slots, *shape), np.uint8, buffer=self.shm.buf)
        self.last_seq = -1  # the last frame sequence number written into this ring

    @property
    def name(self) -> str:
        return self.shm.name

    def free(self) -> None:
        """Unmap and unlink the segment (the child may still map it; its pages go when it unmaps too)."""
        self.frames = None  # the view must go before close(), or close() raises BufferError
        self.shm.close()
        with contextlib.suppress(FileNotFoundError):
            self.shm.unlink()


class LandmarkProcess:
    """A child process that owns a LandmarkTracker and measures the landmarks of frames sent to it.

    ``submit(frame, t)`` and ``result()`` pair up first-in first-out; up to ``slots`` frames may be
    in flight. The child starts on ``start()`` or the first ``submit``. After the child dies or
    hangs every call raises LandmarkProcessError until ``close()``; a closed process may be started
    again. Not thread-safe: one per stream.
    """

    def __init__(self, smoothing: SmoothingConfig | None = None, slots: int = RING_SLOTS,
                 result_timeout_s: float = RESULT_TIMEOUT_S, start_timeout_s: float = START_TIMEOUT_S) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1; got {slots}")
        self.smoothing = smoothing or SmoothingConfig()
        self.slots = slots
        self.result_timeout_s = result_timeout_s
        self.start_timeout_s = start_timeout_s
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None
        self._ready = False
        self._failure: str | None = None  # why the child cannot be used any more
        self._ring: _Ring | None = None
        self._retired: list[_Ring] = []  # rings replaced after a frame-size change, freed once their frames are back
        self._pending: deque[tuple[int, float]] = deque()  # (seq, t) of frames sent, oldest first
        self._seq = 0

    # --- lifecycle --------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The child's process id, or None before it started and after close()."""
        return None if self._proc is None else self._proc.pid

    @property
    def pending(self) -> int:
        """Frames submitted whose result has not been taken yet."""
        return len(self._pending)

    @property
    def shm_names(self) -> list[str]:
        """Names of the shared-memory segments this object holds now (under /dev/shm on Linux)."""
        return [r.name for r in (*self._retired, *([self._ring] if self._ring else []))]

    def start(self, wait_ready: bool = True) -> None:
        """Spawn the child (if not running); with ``wait_ready``, block until its FaceMesh is built.

        Raises: LandmarkProcessError if it dies or is not ready within ``start_timeout_s``.
        """
        if self._proc is None:
            ctx = get_context("spawn")  # never fork a process that may run threads, torch or MediaPipe
            self._conn, child_conn = ctx.Pipe(duplex=True)
            self._proc = ctx.Process(target=_child_main, args=(child_conn, self.smoothing),
                                     name="enliven-landmarks", daemon=True)
            with _child_thread_env():
                self._proc.start()
            child_conn.close()  # so that the child's death reads as EOF here
            log.info("landmark process started (pid %s)", self._proc.pid)
        if wait_ready:
            self._wait_ready()

    def _wait_ready(self) -> None:
        if self._ready:
            return
        self._raise_if_failed()
        reply = self._receive(self.start_timeout_s, "ready signal")
        if reply[0] != "ready":
            self._fail(f"the landmark process could not start: {reply[-1]}")
        self._ready = True

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stop the child (join, then terminate, then kill) and unlink every shared-memory segment."""
        proc, conn = self._proc, self._conn
        if proc is not None and conn is not None:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("close",))
            proc.join(timeout_s)
            for stop in (proc.terminate, proc.kill):
                if proc.is_alive():
                    stop()
                    proc.join(1.0)
            conn.close()
            with contextlib.suppress(ValueError):  # still running (cannot happen after kill): keep its handle
                proc.close()  # releases the sentinel
        for ring in (*self._retired, *([self._ring] if self._ring else [])):
            ring.free()
        self._proc, self._conn, self._ring, self._retired = None, None, None, []
        self._ready, self._failure = False, None
        self._pending.clear()

    def __enter__(self) -> "LandmarkProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- frames -----------------------------------------------------------------------------------
    def submit(self, frame: np.ndarray, t: float) -> None:
        """Send ``frame`` ((H, W, 3) uint8 RGB) taken at ``t`` seconds to the child; returns at once.

        Raises: ShapeError for a bad frame; RuntimeError when ``slots`` frames are already in flight;
        LandmarkProcessError if the child is gone.
        """
        _check_frame(frame)
        if len(self._pending) >= self.slots:
            raise RuntimeError(f"{self.slots} frames are already in flight: take a result() before submitting more")
        self._raise_if_failed()
        self.start(wait_ready=False)
        ring = self._ring_for(frame.shape)
        slot = self._seq % self.slots
        assert ring.frames is not None
        ring.frames[slot] = frame
        ring.last_seq = self._seq
        self._send(("frame", self._seq, slot, float(t)))
        self._pending.append((self._seq, float(t)))
        self._seq += 1

    def result(self) -> LandmarkResult:
        """The landmarks of the oldest submitted frame, waiting for them if needed.

        Raises: RuntimeError if nothing is pending; LandmarkProcessError if the child dies, does not
        answer within ``result_timeout_s``, or fails on the frame.
        """
        if not self._pending:
            raise RuntimeError("no frame is pending: submit() one first")
        t0 = time.perf_counter()
        self._wait_ready()
        seq, t = self._pending[0]
        reply = self._receive(self.result_timeout_s, f"landmarks for the frame at t={t:.3f} s")
        wait_ms = (time.perf_counter() - t0) * 1e3
        self._pending.popleft()
        self._free_retired(seq)
        if reply[0] == "error":
            raise LandmarkProcessError(f"the landmark process failed on the frame at t={t:.3f} s: {reply[2]}")
        if reply[1] != seq:
            self._fail(f"the landmark process answered frame {reply[1]} while frame {seq} was expected")
        return LandmarkResult(reply[2], t, float(reply[3]), wait_ms)

    def track(self, frame: np.ndarray, t: float) -> np.ndarray | None:
        """Serial convenience: submit one frame and wait for its landmarks ((478, 3) float32 or None)."""
        self.submit(frame, t)
        return self.result().points

    # --- internals --------------------------------------------------------------------------------
    def _ring_for(self, shape: tuple[int, ...]) -> _Ring:
        """The ring for frames of ``shape``; a new segment (announced to the child) when the size changes."""
        if self._ring is not None and self._ring.shape == shape:
            return self._ring
        if self._ring is not None:
            if self._pending:
                self._retired.append(self._ring)  # the child still reads frames from it
            else:
                self._ring.free()
        self._ring = _Ring(self.slots, (int(shape[0]), int(shape[1]), int(shape[2])))
        self._send(("attach", self._ring.name, self.slots, self._ring.shape))
        return self._ring

    def _free_retired(self, done_seq: int) -> None:
        """Free replaced rings whose frames have all come back (``done_seq`` is the newest one that has)."""
        keep = []
        for ring in self._retired:
            if ring.last_seq <= done_seq:
                ring.free()
            else:
                keep.append(ring)
        self._retired = keep

    def _send(self, msg: tuple[Any, ...]) -> None:
        assert self._conn is not None
        try:
            self._conn.send(msg)
        except (OSError, ValueError) as e:
            raise self._died("sending a frame") from e

    def _receive(self, timeout_s: float, what: str) -> tuple[Any, ...]:
        """The child's next message; raises LandmarkProcessError if it dies or says nothing for ``timeout_s``."""
        assert self._conn is not None and self._proc is not None
        deadline = time.monotonic() + timeout_s
        while True:
            if self._conn.poll(0):  # a reply sent just before dying is still good
                try:
                    return self._conn.recv()
                except (EOFError, OSError) as e:
                    raise self._died(f"waiting for {what}") from e
            if not self._proc.is_alive():
                raise self._died(f"waiting for {what}")
            left = deadline - time.monotonic()
            if left <= 0:
                self._proc.kill()  # stuck: it cannot be trusted with the next frames either
                self._fail(f"the landmark process (pid {self._proc.pid}) gave no {what} within {timeout_s:g} s; "
                           "close() it and start a new one")
            wait([self._conn, self._proc.sentinel], left)

    def _died(self, doing: str) -> LandmarkProcessError:
        assert self._proc is not None
        self._proc.join(1.0)
        code = self._proc.exitcode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        self._failure = (f"the landmark process (pid {self._proc.pid}) {how} while {doing}; "
                         "close() it and start a new one")
        log.warning("%s", self._failure)
        return LandmarkProcessError(self._failure)

    def _fail(self, message: str) -> None:
        self._failure = message
        log.warning("%s", message)
        raise LandmarkProcessError(message)

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise LandmarkProcessError(self._failure)


# --- the child ------------------------------------------------------------------------------------
def _child_main(conn: Connection, smoothing: SmoothingConfig) -> None:
    """The child: build a LandmarkTracker, say "ready", serve frames until "close" or a closed pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which closes us
    # MediaPipe opens its calculators (TFLite, XNNPACK) on graph threads after FaceMesh is built and
    # prints INFO/WARNING lines from C++ meanwhile. The serial path's first track() follows at once and
    # covers that window; the child waits for its first frame, so it stays quiet until that frame is
    # measured. ExitStack.close() restores stderr and is idempotent.
    quiet = contextlib.ExitStack()
    quiet.enter_context(native_logs_silenced())
    restore_stderr = quiet.close
    try:
        import cv2

        cv2.setNumThreads(1)
        tracker = LandmarkTracker(smoothing)
    except Exception as e:  # report why, rather than leave the parent to guess from an exit code
        restore_stderr()
        conn.send(("error", -1, f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", os.getpid()))
    try:
        _serve(conn, tracker, restore_stderr)
    finally:
        tracker.close()
        restore_stderr()


def _serve(conn: Connection, tracker: Any, restore_stderr: Callable[[], None]) -> None:
    """Attach rings and answer frames in order; returns on "close" or when the parent is gone."""
    shm: SharedMemory | None = None
    frames: np.ndarray | None = None
    try:
        while True:
            try:
                msg = conn.recv()
            except EOFError:
                break
            if msg[0] == "close":
                break
            if msg[0] == "attach":
                frames = None
                if shm is not None:
                    shm.close()
                _, name, slots, shape = msg
                shm = SharedMemory(name=name)
                frames = np.ndarray((slots, *shape), np.uint8, buffer=shm.buf)
            elif msg[0] == "frame":
                assert frames is not None, "a frame came before its ring"
                reply = _measure(tracker, frames, *msg[1:])
                restore_stderr()
                conn.send(reply)
    finally:
        frames = None  # the view must go before close(), or close() raises BufferError
        if shm is not None:
            shm.close()


def _measure(tracker: Any, frames: np.ndarray, seq: int, slot: int, t: float) -> tuple[Any, ...]:
    """One frame's reply: ("points", seq, (478, 3) float32 | None, ms) or ("error", seq, message)."""
    t0 = time.perf_counter()
    try:
        points = tracker.track(frames[slot], t)
    except Exception as e:  # sent to the parent, which raises it there
        log.debug("landmarks failed: %s", traceback.format_exc())
        return ("error", seq, f"{type(e).__name__}: {e}")
    return ("points", seq, points, (time.perf_counter() - t0) * 1e3)


# --- the pipelined animator -----------------------------------------------------------------------
class PipelinedAnimator:
    """An Animator whose landmarks run one frame ahead in a LandmarkProcess.

    ``step(frame n)`` sends frame n to the child and animates frame n-1 with its landmarks, so the
    child measures frame n while this process warps and refines frame n-1. Outputs equal the serial
    ``Animator.step`` outputs, one call later: the first call returns None, ``flush()`` returns the
    last frame. Owns the wrapped Animator (close() closes both). Not thread-safe: one per stream.
    """

    def __init__(self, animator: Animator, landmarks: LandmarkProcess | None = None) -> None:
        self.animator = animator
        self.landmarks = landmarks or LandmarkProcess(animator.config.smoothing)
        if self.landmarks.slots < 2:
            raise ValueError(f"a pipelined animator keeps 2 frames in flight; the LandmarkProcess has "
                             f"{self.landmarks.slots} slot(s)")
        self._last_t: float | None = None
        self._submit_ms = 0.0

    @property
    def last(self) -> StepInfo:
        """The wrapped Animator's StepInfo of the frame last returned.

        ``timings_ms`` adds to its stages: "landmarks" = the child's time on that frame (in parallel,
        not on this process's clock), "landmark_wait" = time this process blocked for it, and
        "landmark_submit" = time to copy the newest frame into shared memory and send it.
        """
        return self.animator.last

    @property
    def source(self) -> Source | None:
        return self.animator.source

    def prepare(self, photo: np.ndarray) -> Source:
        """Start the child (without waiting) and prepare the photo ((H, W, 3) uint8 RGB) meanwhile."""
        self.landmarks.start(wait_ready=False)
        return self.animator.prepare(photo)

    def step(self, frame: np.ndarray, t: float | None = None) -> np.ndarray | None:
        """Send ``frame`` ((H, W, 3) uint8 RGB, at ``t`` s) and return the output of the previous frame.

        Returns None on the first call. Raises: ShapeError, LandmarkProcessError, RuntimeError
        (before prepare()).
        """
        _check_frame(frame)
        if self.animator.source is None:
            raise RuntimeError("call prepare(photo) before step()")
        t = self._clock(t)
        t0 = time.perf_counter()
        self.landmarks.submit(frame, t)
        self._submit_ms = (time.perf_counter() - t0) * 1e3
        return self._animate_oldest() if self.landmarks.pending > 1 else None

    def flush(self) -> np.ndarray | None:
        """The output of the last submitted frame, or None if every output was returned already."""
        self._submit_ms = 0.0
        return self._animate_oldest() if self.landmarks.pending else None

    def _clock(self, t: float | None) -> float:
        """Like Animator's clock: ``t``, or 1/fps after the previous frame (0 for the first)."""
        if t is None:
            t = 0.0 if self._last_t is None else self._last_t + 1.0 / self.animator.config.fps
        self._last_t = float(t)
        return self._last_t

    def _animate_oldest(self) -> np.ndarray:
        res = self.landmarks.result()
        out = self.animator.step_landmarks(res.points, res.t)
        self.animator.last.timings_ms.update(landmarks=res.measure_ms, landmark_wait=res.wait_ms,
                                             landmark_submit=self._submit_ms)
        return out

    def close(self) -> None:
        """Stop the landmark process and close the wrapped Animator."""
        self.landmarks.close()
        self.animator.close()
        self._last_t = None

    def __enter__(self) -> "PipelinedAnimator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
