"""The data channel ("control") protocol: JSON text messages, one object each.

Client -> server:
    {"type": "hello", "token": T}          first message; anything else first ends the session
    {"type": "ping", "t": <client ms>}     every heartbeat_interval_s; any message counts as a heartbeat
    {"type": "set", "mode": "relative" | "absolute"}
    {"type": "set", "size": 256 | 512}
    {"type": "set", "engine": "analytic" | "trained"}   (only "analytic" exists yet)
    {"type": "reset_reference"}            take the next frames as the driver's neutral pose
Server -> client:
    {"type": "hello", "ok": true, "settings": {...}, "heartbeat_interval_s": 1.0, "heartbeat_timeout_s": 5.0}
    {"type": "pong", "t": <echoed>}
    {"type": "stats", "fps_in", "fps_out", "server_ms_p50", "server_ms_p95", "step_ms_p50", "face_found", ...}
    {"type": "face", "found": bool}        sent as soon as the face is lost or found again
    {"type": "hint", "max_fps": int}       the server cannot animate every webcam frame: send at most this many
    {"type": "settings", "settings": {...}}
    {"type": "error", "code": str, "message": str}
    {"type": "bye", "reason": str}         the server is ending the session
Messages over max_channel_message_bytes, over the rate limit, not JSON objects or of unknown types
are refused with an error (or dropped, for the rate limit); they do not end the session.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any

from enliven.engine.motion import TransferMode

from .config import ServerConfig
from .media import EngineSettings
from .sessions import Registry, Session, SessionState
from .worker import generators

logger = logging.getLogger(__name__)

SIZES_PX = (256, 512)
ENGINES = ("analytic", "trained")


def _error(session: Session, code: str, message: str) -> None:
    session.send({"type": "error", "code": code, "message": message})


def handle_message(session: Session, registry: Registry, config: ServerConfig, raw: str | bytes) -> None:
    """Handle one data-channel message of ``session``."""
    if session.state == SessionState.ENDED:
        return
    now = time.monotonic()
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if session.state == SessionState.CONNECTED:
        session.last_message_s = now  # even a refused message shows the client is alive
        if not session.allow_message(config.max_channel_messages_per_s):
            return
    if size > config.max_channel_message_bytes:
        _error(session, "too_large", f"messages are limited to {config.max_channel_message_bytes} bytes; got {size}")
        return
    try:
        msg = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        msg = None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        _error(session, "bad_message", 'expected a JSON object with a string "type"')
        return
    kind = msg["type"]
    if session.state != SessionState.CONNECTED:
        _hello(session, registry, config, msg, now)
        return
    if kind == "ping":
        t = msg.get("t")
        session.send({"type": "pong", "t": t if isinstance(t, (int, float)) else None})
    elif kind == "set":
        _set(session, msg)
    elif kind == "reset_reference":
        session.engine.request_reset_reference()
        session.send({"type": "settings", "settings": session.engine.pending_settings.public(), "reset": True})
    elif kind == "hello":
        pass  # a repeated hello is harmless
    else:
        _error(session, "unknown_type", f"unknown message type {kind[:40]!r}")


def _hello(session: Session, registry: Registry, config: ServerConfig, msg: dict[str, Any], now: float) -> None:
    token = msg.get("token")
    if msg["type"] != "hello" or not isinstance(token, str) or not session.check_token(token):
        logger.info("session %s: data channel refused (no valid hello)", session.short)
        ch = session.channel
        if ch is not None and ch.readyState == "open":
            ch.send(json.dumps({"type": "error", "code": "forbidden",
                                "message": "the first message must be a hello with the session token"}))
        registry.end_soon(session, "bad data-channel token")
        return
    session.state = SessionState.CONNECTED
    session.connected_s = session.last_message_s = now
    logger.info("session %s connected", session.short)
    session.send({"type": "hello", "ok": True, "settings": session.engine.pending_settings.public(),
                  "heartbeat_interval_s": config.heartbeat_interval_s,
                  "heartbeat_timeout_s": config.heartbeat_timeout_s})


def _set(session: Session, msg: dict[str, Any]) -> None:
    current = session.engine.pending_settings
    new = current
    if "mode" in msg:
        try:
            new = EngineSettings(new.crop_size_px, TransferMode(msg["mode"]), new.engine)
        except ValueError:
            _error(session, "bad_value", 'mode must be "relative" or "absolute"')
            return
    if "size" in msg:
        if msg["size"] not in SIZES_PX or isinstance(msg["size"], bool):
            _error(session, "bad_value", f"size must be one of {SIZES_PX}")
            return
        new = EngineSettings(int(msg["size"]), new.mode, new.engine)
    if "engine" in msg:
        if msg["engine"] not in ENGINES:
            _error(session, "bad_value", f"engine must be one of {ENGINES}")
            return
        if msg["engine"] not in generators():
            _error(session, "unavailable", "this engine has no trained generator yet; staying in analytic mode")
        else:
            new = EngineSettings(new.crop_size_px, new.mode, msg["engine"])
    if new != current:
        session.engine.request(new)
    session.send({"type": "settings", "settings": new.public()})
