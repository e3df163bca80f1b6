"""Inference worker processes: the Animators of many sessions, off the server's GIL.

MediaPipe's Python wrapper holds the GIL, so Animators in threads of the server process do not
run in parallel with each other nor with aiortc's decoding/encoding, and several sessions starve
one another (measured: benchmarks/RESULTS.md). A small fixed pool of worker processes (one per
core by default, pool.py) holds the Animators instead; each session is pinned to one worker, and
each worker animates one frame at a time. The messages are in protocol.py; each session's frames go
through the same SessionAnimator as in a thread of the server (session_animator.py).

A worker holds photos: it writes no core file and is not dumpable (decoding.harden_process).
"""
from __future__ import annotations

import logging
import os
from multiprocessing.connection import Connection

import cv2
import numpy as np

from enliven.engine.choices import ENGINES
from enliven.engine.defaults import builtin_photo
from enliven.engine.errors import EnlivenError

from .decoding import harden_process
from .photos import PhotoCounter
from .protocol import (
    ClosedReply,
    CloseRequest,
    ErrorReply,
    FrameReply,
    FrameRequest,
    PhotoReply,
    PhotoRequest,
    PointsRequest,
    PreparedReply,
    PrepareRequest,
    ProtocolError,
    QuitRequest,
    ReadyReply,
    RefusedReply,
    Reply,
    Request,
    StatsReply,
    StatsRequest,
    receive,
    send,
)
from .session_animator import FP32, InferenceOptions, SessionAnimator, warm_up

logger = logging.getLogger(__name__)


class Worker:
    """The sessions of one worker process, by session id; ``handle`` answers one request."""

    def __init__(self, inference: InferenceOptions = FP32) -> None:
        self.inference = inference  # how the refiners of this worker's sessions run
        self.builtin = builtin_photo()  # (H, W, 3) uint8 RGB; each session gets its own copy
        self.sessions: dict[str, SessionAnimator] = {}
        self._photos = PhotoCounter()

    def photos_alive(self) -> int:
        return self._photos.collected()

    def warm_up(self) -> None:
        """Load MediaPipe and every engine's generator before users come."""
        warm_up(self.builtin, ENGINES, self.inference)

    def handle(self, request: Request) -> Reply:
        """The reply to ``request`` (QuitRequest is the caller's: it has no reply)."""
        if isinstance(request, FrameRequest):
            return self.frame(request)
        if isinstance(request, PointsRequest):
            return self.points(request)
        if isinstance(request, PrepareRequest):
            return self.prepare(request)
        if isinstance(request, PhotoRequest):
            held = self.sessions.get(request.sid)
            return PhotoReply(None if held is None else held.photo_png())
        if isinstance(request, CloseRequest):
            self.close(request.sid)
            return ClosedReply(self.photos_alive())
        if isinstance(request, StatsRequest):
            return StatsReply(len(self.sessions), self.photos_alive())
        return ErrorReply("protocol", f"unexpected request {type(request).__name__}")

    def prepare(self, request: PrepareRequest) -> PreparedReply | RefusedReply:
        self.close(request.sid)
        if request.height == 0:
            photo = self.builtin.copy()
        else:  # a copy: the request (and its buffer) is dropped once answered
            photo = np.frombuffer(request.rgb, np.uint8).reshape(request.height, request.width, 3).copy()
        try:
            session = SessionAnimator(photo, request.settings, request.debug, self.inference)
        except EnlivenError as e:
            return RefusedReply.of(e)
        self._photos.track(photo)
        self.sessions[request.sid] = session
        return PreparedReply(session.face_count)

    def frame(self, request: FrameRequest) -> FrameReply | ErrorReply:
        session = self.sessions.get(request.sid)
        if session is None:
            return ErrorReply("gone", "no such session in this worker")
        yuv = np.frombuffer(request.i420, np.uint8).reshape(request.height * 3 // 2, request.width)
        rgb = cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420)
        out = session.frame(rgb, request.t_s, request.settings, request.reset_reference)
        i420 = cv2.cvtColor(np.ascontiguousarray(out.image), cv2.COLOR_RGB2YUV_I420)
        return FrameReply(out.image.shape[0], out.face_found, out.step_ms, out.settings, i420.tobytes())

    def points(self, request: PointsRequest) -> FrameReply | ErrorReply:
        session = self.sessions.get(request.sid)
        if session is None:
            return ErrorReply("gone", "no such session in this worker")
        pts = None if request.points is None else np.frombuffer(request.points, np.float32).reshape(-1, 3)
        out = session.points(pts, request.t_s, request.frame_id, request.settings, request.reset_reference)
        i420 = cv2.cvtColor(np.ascontiguousarray(out.image), cv2.COLOR_RGB2YUV_I420)
        return FrameReply(out.image.shape[0], out.face_found, out.step_ms, out.settings, i420.tobytes())

    def close(self, sid: str) -> None:
        session = self.sessions.pop(sid, None)
        if session is not None:
            session.close()


def worker_main(conn: Connection, inference: InferenceOptions = FP32) -> None:
    """Entry point of a worker process: serve requests on ``conn`` until QuitRequest or the pipe closes;
    ``inference``: how its sessions' refiners run."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    harden_process()
    # One OpenCV thread: the workers already fill the cores (one per core by default), and cv2's pool threads
    # (remap, resizes, blurs of each frame) only wait for one another then. Measured on the built-in clip,
    # trained engine, int8 refiner on 1 thread, busy 2-core host (benchmarks/ab_points.py, paired medians):
    # 0.4 to 1.9 ms less CPU per frame at 256 px and up to 2.4 ms at 512, depending on the load on the other
    # core; wall time not longer. Output unchanged.
    cv2.setNumThreads(1)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker = Worker(inference)
    worker.warm_up()
    send(conn, ReadyReply(os.getpid()))
    while _serve_one(conn, worker):
        pass


def _serve_one(conn: Connection, worker: Worker) -> bool:
    """Receive one request and send its reply (the request, an upload's bytes included, is dropped on
    return). False when the worker should exit."""
    try:
        request = receive(conn)
    except (EOFError, OSError):
        return False
    except ProtocolError as e:
        reply: Reply = ErrorReply("protocol", str(e))
    else:
        if isinstance(request, QuitRequest):
            return False
        try:
            reply = worker.handle(request)  # type: ignore[arg-type]
        except Exception as e:  # one bad request must not kill the other sessions of this worker
            logger.warning("worker: %s failed: %s: %s", type(request).__name__, type(e).__name__, str(e)[:200])
            reply = ErrorReply(type(e).__name__, str(e)[:200])
    try:
        send(conn, reply)
    except OSError:  # the server closed the pipe
        return False
    return True
