"""The face points stream: what a page running the face landmarker sends instead of its camera's video.

One binary message per camera frame on the data channel ``points`` (unordered, no retransmits: a late
message is worth nothing). Version 1, little-endian:

    offset  size     field
    0       1        version: 1
    1       1        flags: bit 0 set = a face was found and its points follow; other bits 0
    2       2        point count: 478 with a face (MediaPipe FaceMesh with irises), 0 without
    4       4        frame id: uint32, one more for every camera frame the page measured (wraps)
    8       8        capture time: float64, milliseconds since the epoch on the page's clock
    16      2        frame width, pixels (1..4096)
    18      2        frame height, pixels (1..4096)
    20      6 x 478  per point x, y, z as int16: MediaPipe's normalised coordinates (x / width,
                     y / height, z / width) times 2**14 (resolution 0.04 px at 640 px, range +-2 frames)

A face is 2888 bytes, "no face" 20 bytes. ``decode_points`` validates a message and gives the points in
the pixel convention of ``Animator.step`` (``landmarks._to_pixels``: x, y in pixels, z times the width).
``PointsIntake`` is one session's gate: it drops invalid messages, stale ones (an older frame id than
one already taken: the channel is unordered) and floods faster than ``max_per_s``, counting each;
``PointsUpstream`` puts what passes into the session's newest-points slot (upstream.py wires it).
"""
from __future__ import annotations

import math
import struct
import time
from dataclasses import dataclass, field

import numpy as np

from .tracks import NewestSlot

VERSION = 1
FLAG_FACE = 0x01
NUM_POINTS = 478  # MediaPipe FaceMesh with refined landmarks (irises)
SCALE = 2.0**14  # int16 units per normalised unit
HEADER = struct.Struct("<BBHIdHH")  # version, flags, count, frame id, capture ms, width, height
FACE_BYTES = HEADER.size + NUM_POINTS * 6  # 2888
MAX_FRAME_SIDE_PX = 4096  # larger frames are refused
MAX_OUTSIDE = 0.5  # x and y may lie this far outside the frame (in frame sizes): faces partly out of view
MAX_ABS_Z = 1.0  # |z| in frame widths
MIN_FACE_PX = 8.0  # a face narrower or shorter than this (pixels) is no face: degenerate points


class PointsError(ValueError):
    """A points message that cannot be used; ``code`` says why (counted per code by the intake)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class PointsMessage:
    frame_id: int  # uint32, from the page
    capture_ms: float  # the page's clock, ms since the epoch
    width: int  # of the camera frame the points were measured on, pixels
    height: int
    points: np.ndarray | None = field(repr=False)  # (478, 3) float32 pixels as Animator.step's; None: no face


@dataclass(frozen=True)
class InputPoints:
    """A validated points message waiting to be animated."""

    message: PointsMessage
    arrived_s: float  # time.monotonic() when the server took it


def encode_points(frame_id: int, capture_ms: float, width: int, height: int, points: np.ndarray | None) -> bytes:
    """One message. ``points``: (478, 3) pixels (x, y, z times the width, as Animator.step's), or None.

    Raises ValueError when the points do not fit the format (wrong shape, not finite, out of range).
    """
    if points is None:
        return HEADER.pack(VERSION, 0, 0, frame_id & 0xFFFFFFFF, float(capture_ms), width, height)
    pts = np.asarray(points, np.float64)
    if pts.shape != (NUM_POINTS, 3) or not np.isfinite(pts).all():
        raise ValueError(f"expected ({NUM_POINTS}, 3) finite points; got {pts.shape}")
    q = np.rint(pts / np.array([width, height, width]) * SCALE)
    if np.abs(q).max() > 32767:
        raise ValueError("points more than two frames away from the frame cannot be encoded")
    header = HEADER.pack(VERSION, FLAG_FACE, NUM_POINTS, frame_id & 0xFFFFFFFF, float(capture_ms), width, height)
    return header + q.astype("<i2").tobytes()


def decode_points(data: bytes) -> PointsMessage:
    """Parse and check one message. Raises PointsError (codes: bad_size, bad_version, bad_header,
    bad_time, out_of_frame, degenerate)."""
    if len(data) < HEADER.size:
        raise PointsError("bad_size", f"a points message has at least {HEADER.size} bytes; got {len(data)}")
    version, flags, count, frame_id, capture_ms, width, height = HEADER.unpack_from(data)
    if version != VERSION:
        raise PointsError("bad_version", f"points format version {VERSION} expected; got {version}")
    face = bool(flags & FLAG_FACE)
    if flags & ~FLAG_FACE or count != (NUM_POINTS if face else 0):
        raise PointsError("bad_header", f"flags 0 with 0 points or 1 with {NUM_POINTS}; got {flags} with {count}")
    expected = FACE_BYTES if face else HEADER.size
    if len(data) != expected:
        raise PointsError("bad_size", f"{expected} bytes expected for {count} points; got {len(data)}")
    if not math.isfinite(capture_ms) or capture_ms < 0:
        raise PointsError("bad_time", "the capture time must be a finite, non-negative number of milliseconds")
    if not (1 <= width <= MAX_FRAME_SIDE_PX and 1 <= height <= MAX_FRAME_SIDE_PX):
        raise PointsError("bad_header", f"frame sides of 1..{MAX_FRAME_SIDE_PX} px expected; got {width}x{height}")
    if not face:
        return PointsMessage(frame_id, capture_ms, width, height, None)
    # The checks run on the int16 units (one min and one max per axis): the same tests as on the normalised
    # coordinates, as SCALE is a power of two; the pixels are each unit times its side over SCALE, rounded
    # once to float32, so the ends of the extent are the pixels' own.
    q = np.frombuffer(data, "<i2", NUM_POINTS * 3, HEADER.size).reshape(NUM_POINTS, 3)
    axes = np.ascontiguousarray(q.T)  # (3, 478): numpy reduces along rows several times faster than down columns
    lo, hi = axes.min(axis=1).tolist(), axes.max(axis=1).tolist()
    if (min(lo[0], lo[1]) < -MAX_OUTSIDE * SCALE or max(hi[0], hi[1]) > (1 + MAX_OUTSIDE) * SCALE
            or max(-lo[2], hi[2]) > MAX_ABS_Z * SCALE):
        raise PointsError("out_of_frame", f"points must lie within {MAX_OUTSIDE:g} frames of the frame")
    to_px = np.array([width / SCALE, height / SCALE, width / SCALE], np.float32)
    ends = np.array([lo, hi], np.float32) * to_px  # (2, 3): the smallest and largest pixel per axis
    extent = ends[1, :2] - ends[0, :2]
    if extent.min() < MIN_FACE_PX:
        raise PointsError("degenerate", f"the points span {extent[0]:.0f}x{extent[1]:.0f} px: no face is that small")
    return PointsMessage(frame_id, capture_ms, width, height, q.astype(np.float32) * to_px)


def is_newer(frame_id: int, than: int) -> bool:
    """Serial-number order of uint32 frame ids (RFC 1982): a wrapped id still counts as newer."""
    return 0 < (frame_id - than) % 2**32 < 2**31


class PointsIntake:
    """One session's gate for points messages: validation, order, and a rate limit (token bucket).

    ``take(data)`` returns the message to animate, or None when it is dropped; the counters say why.
    """

    def __init__(self, max_per_s: float, burst: int = 10) -> None:
        self.max_per_s = max_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._refilled_s = time.monotonic()
        self._last_id: int | None = None
        self.received = 0  # messages that arrived
        self.accepted = 0  # messages handed on to be animated
        self.stale = 0  # older than one already taken (the channel is unordered)
        self.rate_limited = 0  # over max_per_s
        self.invalid: dict[str, int] = {}  # by PointsError code
        self.last_error: PointsError | None = None

    def _allow(self, now: float) -> bool:
        self._tokens = min(float(self.burst), self._tokens + max(0.0, now - self._refilled_s) * self.max_per_s)
        self._refilled_s = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def take(self, data: bytes, now: float | None = None) -> PointsMessage | None:
        now = time.monotonic() if now is None else now
        self.received += 1
        if not self._allow(now):
            self.rate_limited += 1
            return None
        try:
            message = decode_points(data)
        except PointsError as e:
            self.invalid[e.code] = self.invalid.get(e.code, 0) + 1
            self.last_error = e
            return None
        if self._last_id is not None and not is_newer(message.frame_id, self._last_id):
            self.stale += 1
            return None
        self._last_id = message.frame_id
        self.accepted += 1
        return message

    def state(self) -> dict[str, object]:
        """Counters for the stats message and /debug/state."""
        return {"received": self.received, "accepted": self.accepted, "stale": self.stale,
                "rate_limited": self.rate_limited, "invalid": dict(self.invalid)}


class PointsUpstream:
    """A session driven by face points: its intake, its newest-points slot and what the stall watch needs."""

    def __init__(self, max_per_s: float) -> None:
        self.intake = PointsIntake(max_per_s)
        self.inbox: NewestSlot[InputPoints] = NewestSlot()
        self.last_s = time.monotonic()  # when the last message was taken (or the session started)
        self.last: PointsMessage | None = None  # the last message taken
        self.errors_sent_s = 0.0  # when the page was last told about a refused message

    def receive(self, data: bytes, now: float | None = None) -> PointsMessage | None:
        """Take one message from the channel; the taken message is put in ``inbox`` and returned."""
        now = time.monotonic() if now is None else now
        message = self.intake.take(data, now)
        if message is not None:
            self.last_s, self.last = now, message
            self.inbox.put(InputPoints(message, now))
        return message

    def state(self) -> dict[str, object]:
        """The intake's counters and the messages replaced unread in the slot (newest wins)."""
        return {**self.intake.state(), "replaced": self.inbox.dropped}

    def stalled_tick(self, now: float, stall_s: float, ease_for_s: float) -> InputPoints | None:
        """A "no face" item to animate when no message came for ``stall_s`` (the page stopped sending: its
        landmarker stalled, the tab was hidden): the output then eases to the photo's own pose as it does
        when the face is lost, for ``ease_for_s``, and holds. None when the stream is alive or eased."""
        idle = now - self.last_s
        if not stall_s <= idle < stall_s + ease_for_s:
            return None
        last = self.last
        message = PointsMessage(0 if last is None else last.frame_id, 0.0, 0 if last is None else last.width,
                                0 if last is None else last.height, None)
        return InputPoints(message, now)
