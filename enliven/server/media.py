"""Media path of one session: webcam track in -> newest-frame slot -> engine -> animated track out.

    remote video track --drain task--> inbox (NewestSlot: one frame, newer replaces older)
        --process loop--> the session's thread --> Animator.step, in an inference worker process
        (ProcessEngine, the default) or in that thread (ThreadEngine, ``--workers 0``)
        --> outbox (NewestSlot) --> AnimatedTrack.recv() --> aiortc's VP8/H264 encoder

Frames are never queued: aiortc's queue behind ``recv()`` is unbounded, so the drain task reads it
continuously and keeps only the newest frame; when the worker is slower than the webcam, frames
are dropped (counted) and the output frame rate falls while latency stays bounded.
"""
from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Generic, TypeVar

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from enliven.animation.animator import Animator
from enliven.engine.motion import TransferMode

from .photos import PhotoCounter
from .pool import WorkerError
from .worker import ECHO_ROWS, animator_config, stamp_disclosure

if TYPE_CHECKING:
    from .pool import WorkerHandle, WorkerPool

logger = logging.getLogger(__name__)

VIDEO_CLOCK_RATE = 90_000  # RTP clock of video, ticks per second
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)

T = TypeVar("T")


class SlotClosed(Exception):
    """The slot was closed: the session is ending."""


class NewestSlot(Generic[T]):
    """A one-item mailbox: ``put`` replaces an unread item (counted as dropped), ``get`` waits for one."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._event = asyncio.Event()
        self._closed = False
        self.put_count = 0  # items put
        self.dropped = 0  # items replaced before anyone read them

    def put(self, item: T) -> None:
        if self._closed:
            return
        if self._item is not None:
            self.dropped += 1
        self._item = item
        self.put_count += 1
        self._event.set()

    async def get(self) -> T:
        while self._item is None:
            if self._closed:
                raise SlotClosed
            self._event.clear()
            await self._event.wait()
        if self._closed:
            raise SlotClosed
        item, self._item = self._item, None
        return item

    @property
    def depth(self) -> int:
        """Items waiting: 0 or 1."""
        return 0 if self._item is None else 1

    def close(self) -> None:
        self._closed = True
        self._item = None
        self._event.set()


@dataclass(frozen=True)
class InputFrame:
    frame: av.VideoFrame  # decoded webcam frame
    arrived_s: float  # time.monotonic() when the drain task got it


@dataclass(frozen=True)
class OutputFrame:
    frame: av.VideoFrame  # animated frame, rgb24, (S, S)
    arrived_s: float  # arrival time of the input frame it was made from
    ready_s: float  # time.monotonic() when the worker finished it
    step_ms: float  # Animator.step wall time
    face_found: bool


@dataclass(frozen=True)
class EngineSettings:
    """What the page's controls can change."""

    crop_size_px: int = 256  # 256 or 512
    mode: TransferMode = TransferMode.RELATIVE
    engine: str = "trained"  # "trained" (learned refiner) or "analytic" (warp only)

    def public(self) -> dict[str, object]:
        return {"size": self.crop_size_px, "mode": self.mode.value, "engine": self.engine}


class SessionEngine:
    """One session's animation engine: its photo, its Animator, its settings. Base of the two kinds.

    ``ProcessEngine`` (the default) keeps them in a worker process (worker.py); ``ThreadEngine``
    in the server process, run in the session's own thread. Both run one frame at a time and
    use the session's single worker thread for their blocking work.
    """

    def __init__(self, name: str, settings: EngineSettings, echo_frame_ids: bool = False,
                 delay_ms: float = 0.0) -> None:
        self.name = name
        self._delay_s = delay_ms / 1e3  # a slow generator, for backpressure tests
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"enliven-{name[:6]}")
        self.settings = settings
        self._pending: EngineSettings | None = None
        self._reset_pending = False
        self._echo = echo_frame_ids
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
        return self._pending or self.settings

    def _take_pending(self) -> tuple[EngineSettings | None, bool]:
        new, self._pending = self._pending, None
        reset, self._reset_pending = self._reset_pending, False
        if new is not None:
            self.settings = new
        return new, reset

    async def prepare(self, upload: bytes | None, max_pixels: int, max_bytes: int) -> int:
        """Decode the upload (None: the built-in photo), find the face, build the Animator.

        Returns the number of faces the detector saw. Raises the engine's EnlivenError kinds.
        """
        raise NotImplementedError

    async def animate(self, item: InputFrame) -> OutputFrame:
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
    """The Animator in the server process, run in the session's thread (``--workers 0``).

    Simple, but MediaPipe holds the GIL: several sessions, and aiortc, then wait for each other.
    """

    def __init__(self, name: str, settings: EngineSettings, photos: PhotoCounter,
                 echo_frame_ids: bool = False, delay_ms: float = 0.0) -> None:
        super().__init__(name, settings, echo_frame_ids, delay_ms)
        self._photos = photos
        self._photo: np.ndarray | None = None
        self._animator: Animator | None = None
        self._size = settings.crop_size_px
        self._mode = settings.mode
        self._engine = settings.engine

    def _new_animator(self, size: int, mode: TransferMode, engine: str) -> Animator:
        return Animator(animator_config(size, mode.value, engine))

    def _prepare(self, upload: bytes | None, max_pixels: int, max_bytes: int) -> int:
        from enliven.engine.defaults import builtin_photo
        from enliven.engine.image_io import load_photo

        photo = builtin_photo() if upload is None else load_photo(upload, max_pixels=max_pixels,
                                                                  max_bytes=max_bytes)
        animator = self._new_animator(self._size, self._mode, self._engine)
        try:
            source = animator.prepare(photo)
        except BaseException:
            animator.close()
            raise
        self._photos.track(photo)
        self._photo, self._animator = photo, animator
        self.face_count = int(source.face.face_count)
        return self.face_count

    async def prepare(self, upload: bytes | None, max_pixels: int, max_bytes: int) -> int:
        return await self.run(self._prepare, upload, max_pixels, max_bytes)

    def _animate(self, item: InputFrame) -> OutputFrame:
        new, reset = self._take_pending()
        if self._animator is None or self._photo is None:
            raise RuntimeError("the session's photo is gone")
        if new is not None and (new.crop_size_px != self._size or new.engine != self._engine):
            try:
                animator = self._new_animator(new.crop_size_px, new.mode, new.engine)
                animator.prepare(self._photo)
            except Exception as e:  # e.g. no trained weights: keep animating as before
                logger.warning("cannot switch to %s at %d px: %s", new.engine, new.crop_size_px, type(e).__name__)
            else:
                self._animator.close()
                self._animator, self._size, self._engine = animator, new.crop_size_px, new.engine
                self._mode = new.mode
        if new is not None and new.mode != self._mode:  # retargeting alone reads the mode
            self._animator.config = replace(self._animator.config, mode=new.mode)
            self._mode = new.mode
        if reset:
            self._animator.reset_reference()
        rgb = item.frame.to_ndarray(format="rgb24")
        t0 = time.perf_counter()
        out = self._animator.step(rgb, t=item.arrived_s - self._t0)
        if self._delay_s:
            time.sleep(self._delay_s)
        step_ms = (time.perf_counter() - t0) * 1e3
        out = np.array(out)  # a writable copy
        stamp_disclosure(out)
        if self._echo:
            w = min(out.shape[1], rgb.shape[1])
            out[:ECHO_ROWS, :w] = rgb[:ECHO_ROWS, :w]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(out), format="rgb24")
        return OutputFrame(frame, item.arrived_s, time.monotonic(), step_ms, self._animator.last.face_found)

    async def animate(self, item: InputFrame) -> OutputFrame:
        return await self.run(self._animate, item)

    def _png(self) -> bytes | None:
        from enliven.engine.image_io import encode_png

        return None if self._photo is None else encode_png(self._photo)

    async def photo_png(self) -> bytes | None:
        return await self.run(self._png)

    def _drop(self) -> None:
        if self._animator is not None:
            self._animator.close()
        self._animator = None
        self._photo = None

    async def _release(self) -> None:
        await self.run(self._drop)


MAX_INPUT_PIXELS = 1920 * 1080  # larger webcam frames are scaled down before they go to a worker


class ProcessEngine(SessionEngine):
    """The Animator in an inference worker process (worker.py), reached over a pipe from the session's thread."""

    def __init__(self, name: str, settings: EngineSettings, pool: WorkerPool, echo_frame_ids: bool = False,
                 delay_ms: float = 0.0) -> None:
        super().__init__(name, settings, echo_frame_ids, delay_ms)
        self._pool = pool
        self._worker: WorkerHandle | None = None
        self._sid = name

    async def prepare(self, upload: bytes | None, max_pixels: int, max_bytes: int) -> int:
        from enliven.engine import errors

        self._worker = await self._pool.assign(self._sid)
        s = self.settings
        reply, _ = await self.run(self._worker.call, ("prepare", self._sid, upload, s.crop_size_px, s.mode.value,
                                                      s.engine, max_pixels, max_bytes))
        if reply[0] == "refused":
            kinds = {k.code: k for k in (errors.BadImageError, errors.UnsupportedFormatError,
                                         errors.ImageTooLargeError, errors.NoFaceError, errors.FaceTooSmallError,
                                         errors.ShapeError)}
            raise kinds.get(reply[1], errors.BadImageError)(reply[2])
        if reply[0] != "ok":
            raise RuntimeError(f"the worker could not prepare the photo: {reply[1]}")
        self.face_count = int(reply[1])
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
        settings = None if new is None else (new.crop_size_px, new.mode.value, new.engine)
        reply, data = self._worker.call(
            ("frame", self._sid, item.arrived_s - self._t0, h, w, settings, reset, self._echo, self._delay_s),
            yuv.tobytes())
        if reply[0] != "out" or data is None:
            raise RuntimeError(f"the worker could not animate the frame: {reply[1]}: {reply[2]}")
        side = int(reply[1])
        out = av.VideoFrame.from_ndarray(np.frombuffer(data, np.uint8).reshape(side * 3 // 2, side),
                                         format="yuv420p")
        return OutputFrame(out, item.arrived_s, time.monotonic(), float(reply[3]), bool(reply[2]))

    async def animate(self, item: InputFrame) -> OutputFrame:
        return await self.run(self._animate, item)

    async def photo_png(self) -> bytes | None:
        if self._worker is None:
            return None
        reply, _ = await self.run(self._worker.call, ("png", self._sid))
        return reply[1]

    async def _release(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        worker.sessions.discard(self._sid)
        if worker.alive:
            await self.run(worker.call, ("close", self._sid))


class FrameStats:
    """Per-session counters and a sliding window of per-frame figures for the stats messages."""

    def __init__(self, window: int = 300) -> None:
        self.frames_in = 0
        self.frames_out = 0
        self.last_in_s = 0.0  # time.monotonic() of the last webcam frame
        self.errors = 0
        self.server_ms: deque[float] = deque(maxlen=window)  # input arrival -> handed to the encoder
        self.step_ms: deque[float] = deque(maxlen=window)
        self._last = (time.monotonic(), 0, 0)
        self.face_found = False

    def rates(self) -> tuple[float, float]:
        """Input and output frames per second since the last call."""
        now = time.monotonic()
        t, fin, fout = self._last
        dt = max(now - t, 1e-6)
        self._last = (now, self.frames_in, self.frames_out)
        return (self.frames_in - fin) / dt, (self.frames_out - fout) / dt

    def snapshot(self) -> dict[str, float | int | bool]:
        fps_in, fps_out = self.rates()

        def pct(values: deque[float], q: float) -> float:
            return round(float(np.percentile(np.fromiter(values, float), q)), 1) if values else 0.0

        return {"fps_in": round(fps_in, 1), "fps_out": round(fps_out, 1), "frames_in": self.frames_in,
                "frames_out": self.frames_out, "face_found": self.face_found,
                "server_ms_p50": pct(self.server_ms, 50), "server_ms_p95": pct(self.server_ms, 95),
                "step_ms_p50": pct(self.step_ms, 50)}


class AnimatedTrack(MediaStreamTrack):
    """The animated video track sent back to the client: the newest worker output, timestamped now."""

    kind = "video"

    def __init__(self, outbox: NewestSlot[OutputFrame], stats: FrameStats) -> None:
        super().__init__()
        self._outbox = outbox
        self._stats = stats
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        try:
            out = await self._outbox.get()
        except SlotClosed:
            self.stop()
            raise MediaStreamError from None
        now = time.monotonic()
        if self._start is None:
            self._start = now
        frame = out.frame
        frame.pts = int((now - self._start) * VIDEO_CLOCK_RATE)
        frame.time_base = VIDEO_TIME_BASE
        self._stats.frames_out += 1
        self._stats.server_ms.append((now - out.arrived_s) * 1e3)
        return frame


async def drain(track: MediaStreamTrack, inbox: NewestSlot[InputFrame], stats: FrameStats) -> None:
    """Read the remote track as fast as frames come, keeping only the newest. Returns when it ends."""
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        now = time.monotonic()
        stats.frames_in += 1
        stats.last_in_s = now
        inbox.put(InputFrame(frame, now))


async def process(engine: SessionEngine, inbox: NewestSlot[InputFrame], outbox: NewestSlot[OutputFrame],
                  stats: FrameStats, on_face: Callable[[bool], None]) -> None:
    """Animate the newest input frame, one at a time, until the session closes (or its worker dies)."""
    face_found: bool | None = None
    while True:
        try:
            item = await inbox.get()
        except SlotClosed:
            return
        try:
            out = await engine.animate(item)
        except WorkerError as e:  # the worker process died: this session cannot go on
            logger.warning("session %s: %s", engine.name[:8], e)
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


class DelayedAudioTrack(MediaStreamTrack):
    """The microphone, passed back late by as much as the video spends in the server.

    The animated video leaves the server one processing time (landmarks, warp, encode queue)
    after its webcam frame arrived; relaying the audio at once would put speech ahead of the
    lips by that much (up to a few hundred ms under load). Each audio frame is held until it is
    ``delay_s()`` old; when the delay shrinks, the held frames go out at once.
    """

    kind = "audio"

    def __init__(self, source: MediaStreamTrack, delay_s: Callable[[], float], max_delay_s: float = 0.5) -> None:
        super().__init__()
        self._source = source
        self._delay_s = delay_s
        self._max_delay_s = max_delay_s
        self._held: deque[tuple[float, av.AudioFrame]] = deque()

    def _due(self) -> bool:
        if not self._held:
            return False
        delay = min(max(self._delay_s(), 0.0), self._max_delay_s)
        return time.monotonic() - self._held[0][0] >= delay

    async def recv(self) -> av.AudioFrame:
        while not self._due():
            frame = await self._source.recv()  # MediaStreamError ends this track with its source
            self._held.append((time.monotonic(), frame))
        return self._held.popleft()[1]


def median_server_delay_s(stats: FrameStats) -> float:
    """Median time (s) from a webcam frame's arrival to its animated frame going to the encoder."""
    values = list(stats.server_ms)[-30:]
    return float(np.median(values)) / 1e3 if values else 0.0
