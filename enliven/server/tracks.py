"""Media tracks of a session and the newest-frame slots between them and the engine.

    remote video track --drain--> inbox (NewestSlot: one frame, newer replaces older)
        --> the session's engine (engines.py) --> outbox (NewestSlot) --> AnimatedTrack.recv()
        --> aiortc's VP8/H264 encoder
    remote audio track --DelayedAudioTrack.drain--> at most MAX_HELD_AUDIO_S of sound, each piece held back
        as long as the video spends in the server --> DelayedAudioTrack.recv() --> aiortc's Opus encoder

Frames are never queued: aiortc's queue behind ``recv()`` is unbounded, so the drain tasks read it
continuously and keep only the newest video frame (and a bounded stretch of sound, even when the
client never asked for its microphone back); when the engine is slower than the webcam, frames are
dropped (counted) and the output frame rate falls while latency stays bounded.
"""
from __future__ import annotations

import asyncio
import fractions
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .stats import FrameStats

VIDEO_CLOCK_RATE = 90_000  # RTP clock of video, ticks per second
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
MAX_HELD_AUDIO_S = 1.0  # sound older than this is dropped, whether or not anyone sends it back

T = TypeVar("T")


class SlotClosed(Exception):
    """The slot was closed: the session is ending."""


class NewestSlot(Generic[T]):
    """A one-item mailbox: ``put`` replaces an unread item (counted as dropped), ``get`` waits for one.

    ``take_newer`` may be called from another thread (the one animating the item ``get`` gave last).
    """

    def __init__(self) -> None:
        self._item: T | None = None
        self._event = asyncio.Event()
        self._closed = False
        self._lock = threading.Lock()  # put and get run in the event loop, take_newer in a session's thread
        self.put_count = 0  # items put
        self.dropped = 0  # items replaced before anyone read them, or read and superseded (take_newer)

    def put(self, item: T) -> None:
        if self._closed:
            return
        with self._lock:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self.put_count += 1
        self._event.set()

    async def get(self) -> T:
        while True:
            if self._closed:
                raise SlotClosed
            with self._lock:
                item, self._item = self._item, None
            if item is not None:
                return item
            self._event.clear()  # put runs in this loop too: none can come between the take and here
            await self._event.wait()

    def take_newer(self) -> T | None:
        """The waiting item, if any, taken now: it supersedes the item read last (which counts as dropped).

        For a session's thread that waited for a shared worker: animating what arrived meanwhile instead
        of what it read before only cuts latency."""
        with self._lock:
            item, self._item = self._item, None
            if item is not None:
                self.dropped += 1
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
    frame: av.VideoFrame  # animated frame, rgb24 or yuv420p, (S, S)
    arrived_s: float  # arrival time of the input frame it was made from
    ready_s: float  # time.monotonic() when the engine finished it
    step_ms: float  # Animator.step wall time
    face_found: bool


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


class AnimatedTrack(MediaStreamTrack):
    """The animated video track sent back to the client: the newest engine output, timestamped now."""

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


class DelayedAudioTrack(MediaStreamTrack):
    """The microphone, passed back late by as much as the video spends in the server.

    The animated video leaves the server one processing time (landmarks, warp, encode queue)
    after its webcam frame arrived; relaying the audio at once would put speech ahead of the
    lips by that much (up to a few hundred ms under load). ``drain`` (run as the session's task)
    reads the source as fast as it gives sound, so aiortc's queue behind it never grows, and keeps
    at most ``max_held_s`` of it; ``recv`` hands each piece on once it is ``delay_s()`` old. When
    the delay shrinks, the held pieces go out at once.
    """

    kind = "audio"

    def __init__(self, source: MediaStreamTrack, delay_s: Callable[[], float], max_delay_s: float = 0.5,
                 max_held_s: float = MAX_HELD_AUDIO_S) -> None:
        super().__init__()
        self._source = source
        self._delay_s = delay_s
        self._max_delay_s = max_delay_s
        self._max_held_s = max(max_held_s, max_delay_s)
        self._held: deque[tuple[float, av.AudioFrame]] = deque()
        self._held_s = 0.0  # duration of the held sound
        self._arrived = asyncio.Event()
        self._source_ended = False
        self.dropped = 0  # pieces of sound dropped unsent (nobody read them in time)

    async def drain(self) -> None:
        """Read the source until it ends, keeping at most ``max_held_s`` of sound (by its duration and by its
        age: a client may send sound faster than it plays)."""
        try:
            while True:
                frame = await self._source.recv()
                now = time.monotonic()
                self._held.append((now, frame))
                self._held_s += _duration_s(frame)
                while self._held and (self._held_s > self._max_held_s or now - self._held[0][0] > self._max_held_s):
                    self._held_s -= _duration_s(self._held.popleft()[1])
                    self.dropped += 1
                self._arrived.set()
        except MediaStreamError:
            pass
        finally:
            self._source_ended = True
            self._arrived.set()

    async def recv(self) -> av.AudioFrame:
        while True:
            if self._held:
                delay = min(max(self._delay_s(), 0.0), self._max_delay_s)
                wait = self._held[0][0] + delay - time.monotonic()
                if wait <= 0:
                    frame = self._held.popleft()[1]
                    self._held_s -= _duration_s(frame)
                    return frame
                await asyncio.sleep(min(wait, 0.02))  # the delay may shrink meanwhile
                continue
            if self._source_ended or self.readyState != "live":
                self.stop()
                raise MediaStreamError
            self._arrived.clear()
            await self._arrived.wait()


def _duration_s(frame: av.AudioFrame) -> float:
    return frame.samples / frame.sample_rate if frame.sample_rate else 0.02
