"""Sessions: the registry, its limits and timeouts, and deletion of everything a session holds.

A session is created by ``POST /api/sessions`` (with the built-in photo or an uploaded one) and
lives until one of: the client closes, the data channel or peer connection closes, the heartbeat
stops (``heartbeat_timeout_s``), no offer or no hello arrives in time, no webcam frame arrives for
``idle_timeout_s``, it reaches ``max_session_s``, ``DELETE /api/sessions/{id}``, or server shutdown.
Ending is idempotent and drops the photo, the Animator, the consent record and every frame derived
from them; photos are never written to disk.

Logs and /debug/state name a session by ``log_id(id)``: a short hash, never the id itself (the id
appears in URLs next to the token).
"""
from __future__ import annotations

import asyncio
import enum
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection

from .config import ServerConfig
from .engines import SessionEngine, log_id
from .photos import PhotoCounter
from .stats import FrameStats
from .tracks import InputFrame, NewestSlot, OutputFrame

logger = logging.getLogger(__name__)

REAP_INTERVAL_S = 0.25  # how often timeouts are checked
MAX_CHANNEL_BUFFER_BYTES = 256 * 1024  # server messages waiting on the data channel beyond this are dropped


@dataclass(frozen=True)
class ConsentRecord:
    """What the uploader confirmed, and when: kept with the session and dropped with it. Not the photo."""

    at: str  # UTC time of the upload, ISO 8601
    photo_sha256: str  # hex SHA-256 of the uploaded file as received

    def public(self) -> dict[str, str]:
        return {"at": self.at, "photo_sha256": self.photo_sha256}


class SessionState(enum.Enum):
    CREATED = "created"  # photo prepared; waiting for the offer
    OFFERED = "offered"  # answer sent; waiting for ICE/DTLS and the data channel's hello
    CONNECTED = "connected"  # hello received: heartbeats and frames are expected
    ENDED = "ended"


@dataclass
class Session:
    """One client: its secret, its engine (photo + Animator), its peer connection and its tasks."""

    id: str
    token: str
    engine: SessionEngine
    photo_kind: str  # "builtin" or "uploaded"
    client: str = "unknown"  # the client's address key (http_guards.client_key): the per-client cap counts it
    consent: ConsentRecord | None = None  # with an uploaded photo
    created_s: float = field(default_factory=time.monotonic)
    state: SessionState = SessionState.CREATED
    offered_s: float = 0.0
    connected_s: float = 0.0
    last_message_s: float = 0.0  # last data-channel message (any kind counts as a heartbeat)
    pc: RTCPeerConnection | None = None
    channel: RTCDataChannel | None = None
    remote_tracks: list[Any] = field(default_factory=list)  # the client's tracks (drained or sent back)
    inbox: NewestSlot[InputFrame] = field(default_factory=NewestSlot)
    outbox: NewestSlot[OutputFrame] = field(default_factory=NewestSlot)
    stats: FrameStats = field(default_factory=FrameStats)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    end_reason: str = ""
    _msg_window: tuple[float, int] = (0.0, 0)  # (window start, count) for the channel rate limit
    set_window: tuple[float, int] = (0.0, 0)  # (window start, count) of "set" messages (channel.py's limit)
    dropped_messages: int = 0
    dropped_sends: int = 0  # server messages dropped because the client does not read its data channel
    fps_hint: int | None = None  # the frame rate the client was last asked to send at most (None: any)

    @property
    def short(self) -> str:
        """The session's name in logs: a short hash of its id (log_id)."""
        return log_id(self.id)

    def check_token(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.token.encode())

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{name}-{self.short}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def send(self, message: dict[str, Any]) -> None:
        """Send a JSON message on the data channel if it is open (best effort)."""
        ch = self.channel
        if ch is not None and ch.readyState == "open" and self.state == SessionState.CONNECTED:
            if ch.bufferedAmount > MAX_CHANNEL_BUFFER_BYTES:  # the client stopped reading: do not queue more
                self.dropped_sends += 1
                return
            try:
                ch.send(json.dumps(message, separators=(",", ":")))
            except Exception as e:  # the transport may be closing
                logger.debug("session %s: send failed: %s", self.short, type(e).__name__)

    def allow_message(self, limit_per_s: float) -> bool:
        """Per-session data-channel rate limit over one-second windows."""
        now = time.monotonic()
        start, count = self._msg_window
        if now - start >= 1.0:
            self._msg_window = (now, 1)
            return True
        if count >= limit_per_s:
            self.dropped_messages += 1
            return False
        self._msg_window = (start, count + 1)
        return True


class Registry:
    """All live sessions, with the capacity limit, the reaper and deletion."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.sessions: dict[str, Session] = {}
        self.reserved = 0  # creations in progress (photo being prepared), counted against capacity
        self.reserved_by: dict[str, int] = {}  # the same, per client address
        self.ending = 0  # sessions being torn down (their memory is not yet released)
        self.photos = PhotoCounter()
        self.ended_total = 0
        self.end_reasons: dict[str, int] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.on_end: list[Callable[[Session], None]] = []
        self.on_reap: list[Callable[[], None]] = []  # run with each reaper pass (e.g. pruning rate limiters)

    # --- capacity -----------------------------------------------------------------------------
    def full(self) -> bool:
        return len(self.sessions) + self.reserved + self.ending >= self.config.max_sessions

    def client_count(self, client: str) -> int:
        """Live sessions of one client address (and creations of it in progress)."""
        return sum(1 for s in self.sessions.values() if s.client == client) + self.reserved_by.get(client, 0)

    def reserve(self, client: str) -> None:
        """Count a creation in progress (its photo being prepared) against the capacity; ``unreserve`` after."""
        self.reserved += 1
        self.reserved_by[client] = self.reserved_by.get(client, 0) + 1

    def unreserve(self, client: str) -> None:
        self.reserved -= 1
        left = self.reserved_by.get(client, 0) - 1
        if left > 0:
            self.reserved_by[client] = left
        else:
            self.reserved_by.pop(client, None)

    def new_ids(self) -> tuple[str, str]:
        """A fresh (session id, token): 128 and 256 random bits."""
        while True:
            sid = secrets.token_urlsafe(16)
            if sid not in self.sessions:
                return sid, secrets.token_urlsafe(32)

    def add(self, session: Session) -> None:
        self.sessions[session.id] = session
        logger.info("session %s created (%s photo); %d live", session.short, session.photo_kind, len(self.sessions))

    def get(self, sid: str) -> Session | None:
        return self.sessions.get(sid)

    # --- ending -------------------------------------------------------------------------------
    def end_soon(self, session: Session, reason: str) -> None:
        """Schedule ``end`` from a callback that cannot await."""
        if session.state == SessionState.ENDED:
            return
        task = asyncio.ensure_future(self.end(session, reason))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def end(self, session: Session, reason: str) -> None:
        """End a session: close its peer connection, stop its tasks, delete its photo. Idempotent."""
        if session.state == SessionState.ENDED:
            return
        session.send({"type": "bye", "reason": reason})
        session.state = SessionState.ENDED
        session.end_reason = reason
        session.consent = None
        self.sessions.pop(session.id, None)
        self.ending += 1
        try:
            await self._release(session)
        finally:
            self.ending -= 1
        self.ended_total += 1
        self.end_reasons[reason] = self.end_reasons.get(reason, 0) + 1
        lasted = time.monotonic() - session.created_s
        logger.info("session %s ended: %s (%.1f s, %d frames in, %d out); %d live", session.short, reason,
                    lasted, session.stats.frames_in, session.stats.frames_out, len(self.sessions))
        for callback in self.on_end:
            callback(session)

    async def _release(self, session: Session) -> None:
        """Stop the session's tasks, close its peer connection, free the Animator and the photo."""
        session.inbox.close()
        session.outbox.close()
        current = asyncio.current_task()
        for task in list(session.tasks):
            if task is not current:
                task.cancel()
        pc, session.pc, session.channel = session.pc, None, None
        if pc is not None:
            try:
                await pc.close()
            except Exception as e:  # closing a half-built connection must not stop the cleanup
                logger.warning("session %s: closing the peer connection: %s", session.short, type(e).__name__)
        await session.engine.close()
        pending = [t for t in session.tasks if t is not current]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def end_all(self, reason: str) -> None:
        await asyncio.gather(*(self.end(s, reason) for s in list(self.sessions.values())))

    # --- timeouts -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.ensure_future(self._reap_forever())

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
            self._reaper = None
        await self.end_all("server shutdown")
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            try:
                self.reap()
            except Exception:  # the reaper must survive anything
                logger.exception("reaper")

    def timed_out(self, s: Session, now: float) -> str | None:
        """Why ``s`` should end now, or None."""
        c = self.config
        if now - s.created_s > c.max_session_s:
            return "maximum session length"
        if s.state == SessionState.CREATED and now - s.created_s > c.offer_timeout_s:
            return "no offer in time"
        if s.state == SessionState.OFFERED and now - s.offered_s > c.connect_timeout_s:
            return "not connected in time"
        if s.state == SessionState.CONNECTED:
            if now - s.last_message_s > c.heartbeat_timeout_s:
                return "heartbeat timeout"
            if now - max(s.stats.last_in_s, s.connected_s) > c.idle_timeout_s:
                return "idle timeout"
        return None

    def reap(self) -> None:
        now = time.monotonic()
        for s in list(self.sessions.values()):
            reason = self.timed_out(s, now)
            if reason is not None:
                self.end_soon(s, reason)
        for callback in self.on_reap:
            callback()

    # --- introspection ------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Counters for /debug/state and /api/health (nothing biometric)."""
        return {
            "sessions": len(self.sessions),
            "reserved": self.reserved,
            "ending": self.ending,
            "max_sessions": self.config.max_sessions,
            "photos_alive": self.photos.alive,
            "consent_records": sum(1 for s in self.sessions.values() if s.consent is not None),
            "ended_total": self.ended_total,
            "end_reasons": dict(self.end_reasons),
            "per_session": [
                {"id": s.short, "state": s.state.value, "inbox_depth": s.inbox.depth,
                 "outbox_depth": s.outbox.depth, "remote_queue": _remote_queue(s, "video"),
                 "dropped_in": s.inbox.dropped, "dropped_out": s.outbox.dropped,
                 "frames_in": s.stats.frames_in, "frames_out": s.stats.frames_out, "errors": s.stats.errors,
                 "dropped_messages": s.dropped_messages, "dropped_sends": s.dropped_sends,
                 "tasks": len(s.tasks), "remote_audio_queue": _remote_queue(s, "audio"),
                 "dropped_oversized": s.stats.dropped_oversized, "dropped_undecoded": s.stats.dropped_undecoded}
                for s in self.sessions.values()
            ],
        }


def _remote_queue(s: Session, kind: str) -> int | None:
    """Frames waiting in aiortc's queue behind the webcam or microphone track (its private, unbounded queue)."""
    for t in s.remote_tracks:
        q = getattr(t, "_queue", None)
        if t.kind == kind and q is not None:
            return int(q.qsize())
    return None

