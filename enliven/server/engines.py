"""Where a session's Animator runs: in an inference worker process (the default) or in a thread.

Both kinds hold one SessionAnimator (session_animator.py) per session and run one frame at a time in
the session's own thread; ``animate_newest`` feeds them the newest webcam frame:

    inbox (NewestSlot) --animate_newest--> engine.animate: ProcessEngine --pipe, I420--> worker.py
        or ThreadEngine --> SessionAnimator.frame --> outbox (NewestSlot)

A session whose page sends face points instead of video (points.py) goes the same way with InputPoints
items: SessionAnimator.points, through PointsRequest to a worker.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import av
import numpy as np

from enliven.engine.defaults import builtin_photo

from .photos import PhotoCounter
from .points import InputPoints
from .pool import WorkerError, WorkerHandle, WorkerPool
from .protocol import (
    CloseRequest,
    ErrorReply,
    FrameReply,
    FrameRequest,
    PhotoReply,
    PhotoRequest,
    PointsRequest,
    PreparedReply,
    PrepareRequest,
    RefusedReply,
    Reply,
)
from .session_animator import (
    FP32,
    NO_DEBUG,
    AnimatedImage,
    DebugOptions,
    EngineSettings,
    InferenceOptions,
    SessionAnimator,
)
from .stats import FrameStats
from .tracks import InputFrame, NewestSlot, OutputFrame, SlotClosed

logger = logging.getLogger(__name__)

T = TypeVar("T")
Newer = Callable[[], InputFrame | InputPoints | None]  # where a newer input may be taken (NewestSlot.take_newer)

MAX_INPUT_PIXELS = 1920 * 1080  # larger webcam frames are scaled down before they go to a worker


def i420_frame(i420: bytes, side: int) -> av.VideoFrame:
    """A yuv420p frame of the planes Y, U, V of a (side, side) image ((side * 3 / 2, side) uint8, C order).

    The planes are copied straight into the frame's buffers: a fifth of the time of
    ``VideoFrame.from_ndarray`` (about 20 vs 120 us at 256x256), which stays for rows that are padded.
    """
    frame = av.VideoFrame(side, side, "yuv420p")
    if any(plane.line_size != plane.width for plane in frame.planes):
        return av.VideoFrame.from_ndarray(np.frombuffer(i420, np.uint8).reshape(side * 3 // 2, side), format="yuv420p")
    data = memoryview(i420)
    start = 0
    for plane in frame.planes:
        end = start + plane.buffer_size
        plane.update(data[start:end])
        start = end
    if start != len(data):
        raise ValueError(f"{side}x{side} I420 planes are {start} bytes; got {len(data)}")
    return frame


def log_id(session_id: str) -> str:
    """How logs, thread names and /debug/state name a session: the first 8 hex digits of its id's SHA-256
    (never the id itself: it appears in URLs next to the token)."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:8]


class SessionEngine:
    """One session's animation engine: its photo, its Animator, its settings. Base of the two kinds.

    ``ProcessEngine`` (the default) keeps them in a worker process (worker.py); ``ThreadEngine``
    in the server process, run in the session's own thread. Both run one frame at a time and
    use the session's single worker thread for their blocking work.
    """

    def __init__(self, name: str, settings: EngineSettings, debug: DebugOptions = NO_DEBUG) -> None:
        self.name = name  # the session's id: the worker's key for it (never logged)
        self.short = log_id(name)
        self.debug = debug
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"enliven-{self.short}")
        self.settings = settings  # the settings the latest frame was made with (a refused switch keeps the old)
        self._pending: EngineSettings | None = None  # asked for, not yet handed to the Animator
        self._asked: EngineSettings | None = None  # handed to the Animator (it may have refused a switch)
        self._reset_pending = False
        self._t0 = time.monotonic()
        self.face_count = 0
        self.closed = False  # set when the session ends; the worker thread is then shut down

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` in this session's worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def request(self, settings: EngineSettings) -> None:
        """Ask for new settings; they apply before the next frame."""
        self._pending = settings

    def request_reset_reference(self) -> None:
        self._reset_pending = True

    @property
    def pending_settings(self) -> EngineSettings:
        """The settings asked for last (not yet applied, or applied)."""
        return self._pending or self._asked or self.settings

    def _take_pending(self) -> tuple[EngineSettings | None, bool]:
        new, self._pending = self._pending, None
        reset, self._reset_pending = self._reset_pending, False
        if new is not None:
            self._asked = new
        return new, reset

    def _session_time_s(self, item: InputFrame | InputPoints) -> float:
        return item.arrived_s - self._t0

    async def prepare(self, photo: np.ndarray | None) -> int:
        """Find the face of ``photo`` ((H, W, 3) uint8 RGB, decoded by decoding.py; None: the built-in
        photo) and build the Animator. Returns the number of faces the detector saw. Raises the engine's
        EnlivenError kinds."""
        raise NotImplementedError

    async def animate(self, item: InputFrame | InputPoints,
                      newer: Newer | None = None) -> OutputFrame:
        """Animate one camera frame or one message of face points (in the session's thread).

        ``newer``: for face points, where the newest message waiting may be taken instead of ``item`` once
        the engine can start (e.g. ``NewestSlot.take_newer``)."""
        if isinstance(item, InputPoints):
            return await self.run(self._animate_points, item, newer)
        return await self.run(self._animate, item)

    def _animate(self, item: InputFrame) -> OutputFrame:
        raise NotImplementedError

    def _animate_points(self, item: InputPoints,
                        newer: Newer | None = None) -> OutputFrame:
        raise NotImplementedError

    async def photo_png(self) -> bytes | None:
        """The photo as decoded, re-encoded as PNG without metadata; None once deleted."""
        raise NotImplementedError

    async def _release(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Delete the photo and the Animator, then stop the session's thread. Idempotent."""
        if self.closed:
            return
        self.closed = True
        try:
            await self._release()
        except RuntimeError:  # the thread was already shut down, or the worker is gone
            pass
        self.executor.shutdown(wait=False)


class ThreadEngine(SessionEngine):
    """The SessionAnimator in the server process, run in the session's thread (``--workers 0``).

    Simple, but MediaPipe holds the GIL: several sessions, and aiortc, then wait for each other.
    """

    def __init__(self, name: str, settings: EngineSettings, photos: PhotoCounter,
                 debug: DebugOptions = NO_DEBUG, inference: InferenceOptions = FP32) -> None:
        super().__init__(name, settings, debug)
        self._photos = photos
        self._inference = inference
        self._session: SessionAnimator | None = None

    def _prepare(self, photo: np.ndarray | None) -> int:
        photo = builtin_photo() if photo is None else np.array(photo)  # a writable copy of its own
        session = SessionAnimator(photo, self.settings, self.debug, self._inference)
        self._photos.track(photo)
        self._session = session
        self.face_count = session.face_count
        return self.face_count

    async def prepare(self, photo: np.ndarray | None) -> int:
        return await self.run(self._prepare, photo)

    def _animate(self, item: InputFrame) -> OutputFrame:
        new, reset = self._take_pending()
        session = self._session
        if session is None:
            raise RuntimeError("the session's photo is gone")
        out = session.frame(item.frame.to_ndarray(format="rgb24"), self._session_time_s(item), new, reset)
        return self._output(out, item)

    def _output(self, out: AnimatedImage, item: InputFrame | InputPoints) -> OutputFrame:
        """An animated image as an output frame; the settings it was made with become the engine's."""
        self.settings = out.settings
        frame = av.VideoFrame.from_ndarray(out.image, format="rgb24")
        return OutputFrame(frame, item.arrived_s, time.monotonic(), out.step_ms, out.face_found)

    def _animate_points(self, item: InputPoints,
                        newer: Newer | None = None) -> OutputFrame:
        new, reset = self._take_pending()  # the session's own thread: nothing else to wait for, ``newer`` unused
        session = self._session
        if session is None:
            raise RuntimeError("the session's photo is gone")
        msg = item.message
        out = session.points(msg.points, self._session_time_s(item), msg.frame_id, new, reset)
        return self._output(out, item)

    def _png(self) -> bytes | None:
        return None if self._session is None else self._session.photo_png()

    async def photo_png(self) -> bytes | None:
        return await self.run(self._png)

    def _drop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()

    async def _release(self) -> None:
        await self.run(self._drop)


def _unexpected(reply: Reply, what: str) -> RuntimeError:
    if isinstance(reply, ErrorReply):
        return RuntimeError(f"the worker could not {what}: {reply.kind}: {reply.message}")
    return RuntimeError(f"the worker could not {what}: unexpected {type(reply).__name__}")


class ProcessEngine(SessionEngine):
    """The SessionAnimator in an inference worker process (worker.py), reached over a pipe from the
    session's thread."""

    def __init__(self, name: str, settings: EngineSettings, pool: WorkerPool,
                 debug: DebugOptions = NO_DEBUG) -> None:
        super().__init__(name, settings, debug)
        self._pool = pool
        self._worker: WorkerHandle | None = None

    async def prepare(self, photo: np.ndarray | None) -> int:
        self._worker = await self._pool.assign(self.name)
        if photo is None:
            request = PrepareRequest(self.name, self.settings, 0, 0, self.debug)
        else:
            request = PrepareRequest(self.name, self.settings, photo.shape[0], photo.shape[1], self.debug,
                                     np.ascontiguousarray(photo, np.uint8).data.cast("B"))  # sent as is
        del photo
        reply = await self.run(self._worker.call, request)
        del request
        if isinstance(reply, RefusedReply):
            raise reply.error()
        if not isinstance(reply, PreparedReply):
            raise _unexpected(reply, "prepare the photo")
        self.face_count = reply.face_count
        return self.face_count

    def _animate(self, item: InputFrame) -> OutputFrame:
        if self._worker is None:
            raise RuntimeError("the session's photo is gone")
        frame = item.frame
        w, h = frame.width, frame.height
        if w * h > MAX_INPUT_PIXELS or w % 2 or h % 2:
            scale = min(1.0, (MAX_INPUT_PIXELS / (w * h)) ** 0.5)
            w, h = max(2, int(w * scale) // 2 * 2), max(2, int(h * scale) // 2 * 2)
            frame = frame.reformat(width=w, height=h, format="yuv420p")
        yuv = frame.to_ndarray(format="yuv420p")
        new, reset = self._take_pending()
        reply = self._worker.call(FrameRequest(self.name, self._session_time_s(item), h, w, new, reset,
                                               yuv.tobytes()))
        return self._output(reply, item, "animate the frame")

    def _animate_points(self, item: InputPoints,
                        newer: Newer | None = None) -> OutputFrame:
        if self._worker is None:
            raise RuntimeError("the session's photo is gone")
        taken = [item]

        def request() -> PointsRequest:
            # Made once this session's worker is free: it may have been animating another session's frame,
            # and points that came meanwhile are newer than the ones read before (those would only add latency).
            fresher = newer() if newer is not None else None
            if isinstance(fresher, InputPoints):
                taken[0] = fresher
            msg = taken[0].message
            new, reset = self._take_pending()
            points = None if msg.points is None else msg.points.astype("<f4").tobytes()
            return PointsRequest(self.name, self._session_time_s(taken[0]), msg.frame_id, new, reset, points)

        reply = self._worker.call(request)
        return self._output(reply, taken[0], "animate the points")

    def _output(self, reply: Reply, item: InputFrame | InputPoints, what: str) -> OutputFrame:
        """The worker's animated frame (I420 planes) as an output frame; its settings become the engine's."""
        if not isinstance(reply, FrameReply):
            raise _unexpected(reply, what)
        self.settings = reply.settings
        out = i420_frame(reply.i420, reply.side)
        return OutputFrame(out, item.arrived_s, time.monotonic(), reply.step_ms, reply.face_found)

    async def photo_png(self) -> bytes | None:
        if self._worker is None:
            return None
        reply = await self.run(self._worker.call, PhotoRequest(self.name))
        if not isinstance(reply, PhotoReply):
            raise _unexpected(reply, "encode the photo")
        return reply.png

    async def _release(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        worker.sessions.discard(self.name)
        if worker.alive:
            await self.run(worker.call, CloseRequest(self.name))


def open_engine(sid: str, settings: EngineSettings, debug: DebugOptions, pool: WorkerPool | None,
                photos: PhotoCounter, inference: InferenceOptions = FP32) -> SessionEngine:
    """The engine of a new session: in ``pool``'s worker processes (they run the refiner as the pool says), or
    in a thread when there is no pool (as ``inference`` says)."""
    if pool is not None:
        return ProcessEngine(sid, settings, pool, debug)
    return ThreadEngine(sid, settings, photos, debug, inference)


async def animate_newest(engine: SessionEngine, inbox: NewestSlot[InputFrame] | NewestSlot[InputPoints],
                         outbox: NewestSlot[OutputFrame],
                         stats: FrameStats, on_face: Callable[[bool], None]) -> None:
    """Animate the newest input frame (or face points), one at a time, until the session closes (or its worker dies)."""
    face_found: bool | None = None
    while True:
        try:
            item = await inbox.get()
        except SlotClosed:
            return
        try:
            out = await engine.animate(item, inbox.take_newer)
        except WorkerError as e:  # the worker process died: this session cannot go on
            logger.warning("session %s: %s", engine.short, e)
            return
        except Exception as e:  # one bad frame must not end the stream
            if engine.closed:
                return
            stats.errors += 1
            logger.warning("frame skipped: %s: %s", type(e).__name__, str(e)[:200])
            continue
        stats.step_ms.append(out.step_ms)
        stats.face_found = out.face_found
        if out.face_found != face_found:
            face_found = out.face_found
            on_face(face_found)
        outbox.put(out)

