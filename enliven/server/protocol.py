"""Messages between the server and its inference worker processes (worker.py): one frozen dataclass each.

The server sends a request and waits for its reply; a worker answers each request in order:

    PrepareRequest -> PreparedReply | RefusedReply (the photo is refused: an EnlivenError, by its code)
    FrameRequest   -> FrameReply
    PhotoRequest   -> PhotoReply
    CloseRequest   -> ClosedReply
    StatsRequest   -> StatsReply
    QuitRequest    -> (none: the worker exits)

Any request may instead be answered by ErrorReply (it failed in the worker; the worker goes on). A
worker's first message is ReadyReply. Frames travel as I420 planes (640x480: 460 KB) and photos as RGB
pixels: ``send`` writes them as raw bytes after their message's header instead of pickling them,
``receive`` joins them again. A photo reaches the worker decoded (decoding.py runs in a child of the
server): the uploaded file never does. The photo and everything derived from it live only in the
worker; CloseRequest drops them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import get_args

from enliven.engine.errors import EnlivenError, error_from_code

from .session_animator import NO_DEBUG, DebugOptions, EngineSettings


# --- requests (server -> worker) -------------------------------------------------------------
@dataclass(frozen=True)
class PrepareRequest:
    """Find the photo's face and build the session's Animator (height 0: the built-in photo)."""

    sid: str
    settings: EngineSettings
    height: int  # of the decoded photo, pixels; 0: the built-in photo
    width: int  # of the decoded photo, pixels
    debug: DebugOptions = NO_DEBUG
    rgb: bytes | memoryview = field(default=b"", repr=False)  # (height, width, 3) uint8 RGB as decoded;
    #                                                          b"": the built-in photo


@dataclass(frozen=True)
class FrameRequest:
    """Animate one webcam frame of session ``sid``."""

    sid: str
    t_s: float  # seconds since the session started, when the frame arrived
    height: int  # of the frame, even
    width: int  # of the frame, even
    settings: EngineSettings | None  # new settings to apply first; None: unchanged
    reset_reference: bool  # take the driver's next frames as its neutral pose
    i420: bytes = field(repr=False)  # (height * 3 / 2, width) uint8 planes Y, U, V


@dataclass(frozen=True)
class PhotoRequest:
    sid: str


@dataclass(frozen=True)
class CloseRequest:
    sid: str


@dataclass(frozen=True)
class StatsRequest:
    pass


@dataclass(frozen=True)
class QuitRequest:
    pass


Request = PrepareRequest | FrameRequest | PhotoRequest | CloseRequest | StatsRequest | QuitRequest


# --- replies (worker -> server) --------------------------------------------------------------
@dataclass(frozen=True)
class ReadyReply:
    pid: int  # the worker's process id


@dataclass(frozen=True)
class PreparedReply:
    face_count: int  # faces the detector saw in the photo (the largest is animated)


@dataclass(frozen=True)
class RefusedReply:
    """The photo was refused: an EnlivenError carried across the process boundary by its code."""

    code: str  # EnlivenError.code
    message: str

    @classmethod
    def of(cls, error: EnlivenError) -> RefusedReply:
        return cls(error.code, str(error))

    def error(self) -> EnlivenError:
        """The error again, of its own kind (EnlivenError when the code is unknown)."""
        return error_from_code(self.code, self.message)


@dataclass(frozen=True)
class FrameReply:
    side: int  # of the animated square frame, pixels
    face_found: bool  # the driver's face was seen in this frame
    step_ms: float  # wall time of Animator.step in the worker
    settings: EngineSettings  # the settings the frame was made with (a refused switch keeps the old ones)
    i420: bytes = field(repr=False)  # (side * 3 / 2, side) uint8 planes Y, U, V


@dataclass(frozen=True)
class PhotoReply:
    png: bytes | None = field(repr=False)  # the photo's preview (session_animator.PREVIEW_MAX_SIDE_PX), PNG;
    #                                        None: no such session


@dataclass(frozen=True)
class ClosedReply:
    photos_alive: int  # photos this worker still holds, after a garbage collection


@dataclass(frozen=True)
class StatsReply:
    sessions: int  # sessions this worker holds
    photos_alive: int  # photos this worker still holds, after a garbage collection


@dataclass(frozen=True)
class ErrorReply:
    """A request failed in the worker (the worker goes on serving its other sessions)."""

    kind: str  # the exception's type name, or "gone" / "protocol"
    message: str


Reply = (ReadyReply | PreparedReply | RefusedReply | FrameReply | PhotoReply | ClosedReply | StatsReply
         | ErrorReply)
_MESSAGE_TYPES = (*get_args(Request), *get_args(Reply))


class ProtocolError(RuntimeError):
    """Something that is not a message of this protocol came over the pipe."""


def send(conn: Connection, message: Request | Reply) -> None:
    """Send one message on ``conn``; a frame's planes or a photo's pixels follow its header as raw bytes."""
    if isinstance(message, (FrameRequest, FrameReply)):
        conn.send(replace(message, i420=b""))
        conn.send_bytes(message.i420)
    elif isinstance(message, PrepareRequest):
        conn.send(replace(message, rgb=b""))
        conn.send_bytes(message.rgb)
    else:
        conn.send(message)


def receive(conn: Connection) -> Request | Reply:
    """Receive one message from ``conn`` (blocking). Raises EOFError/OSError when the pipe closes,
    ProtocolError on anything else than a message of this module."""
    message = conn.recv()
    if not isinstance(message, _MESSAGE_TYPES):
        raise ProtocolError(f"expected a worker message; got {type(message).__name__}")
    if isinstance(message, (FrameRequest, FrameReply)):
        message = replace(message, i420=conn.recv_bytes())
    elif isinstance(message, PrepareRequest):
        message = replace(message, rgb=conn.recv_bytes())
    return message  # type: ignore[no-any-return]
