"""The data channel ("control") protocol: JSON text messages, one object each.

Client -> server:
    {"type": "hello", "token": T}          first message; anything else first ends the session
    {"type": "ping", "t": <client ms>}     every heartbeat_interval_s; any message counts as a heartbeat
    {"type": "set", "mode": "relative" | "absolute"}
    {"type": "set", "size": 256 | 512}
    {"type": "set", "engine": "analytic" | "trained"}
    {"type": "set", "gains": {"head_rotation": 0..1.5, "head_position": 0..1.5, "eyes": 0..2, "gaze": 0..2,
                              "brows": 0..2, "mouth": 0..2}}   any subset; the others keep their values
    {"type": "set", "eyes": "follow" | "open" | "auto-blink"}
                                           one "set" may carry several of these; each is answered by
                                           "settings" (all applied) or "error" (none applied); at most
                                           MAX_SETS_PER_S a second, more are refused with "rate_limited"
    {"type": "reset_reference"}            take the next frames as the driver's neutral pose
Server -> client:
    {"type": "hello", "ok": true, "settings": {...}, "heartbeat_interval_s": 1.0, "heartbeat_timeout_s": 5.0}
    {"type": "pong", "t": <echoed>}
    {"type": "stats", "fps_in", "fps_out", "server_ms_p50", "server_ms_p95", "step_ms_p50", "face_found", ...,
     "settings": {"size", "mode", "engine", "gains": {...}, "eyes"}}
                                           every stats_interval_s once connected; settings as applied now
    {"type": "face", "found": bool}        sent as soon as the face is lost or found again
    {"type": "hint", "max_fps": int}       the server cannot animate every webcam frame: send at most this many
                                           (stats.fps_hint; when it keeps up again, max_fps is 30)
    {"type": "settings", "settings": {...}}
    {"type": "error", "code": str, "message": str}
    {"type": "bye", "reason": str}         the server is ending the session
Messages over max_channel_message_bytes, over the rate limit, not JSON objects or of unknown types
are refused with an error (or dropped, for the rate limit); they do not end the session.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import replace
from typing import Any

from enliven.engine.choices import CROP_SIZES_PX, ENGINES
from enliven.engine.motion import EyesMode, MotionGains, TransferMode

from .config import ServerConfig
from .sessions import Registry, Session, SessionState
from .stats import MAX_HINT_FPS, fps_hint

logger = logging.getLogger(__name__)

MAX_SETS_PER_S = 20  # "set" messages per session and second; the page sends at most 10 while a slider moves


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


def _allow_set(session: Session, now: float) -> bool:
    """At most MAX_SETS_PER_S "set" messages per one-second window (sliders are throttled by the page)."""
    start, count = session.set_window
    if now - start >= 1.0:
        session.set_window = (now, 1)
        return True
    if count >= MAX_SETS_PER_S:
        return False
    session.set_window = (start, count + 1)
    return True


def _gains(current: MotionGains, value: object) -> MotionGains:
    """``current`` with the gains of a message's ``"gains"`` object replaced; ValueError says what is wrong."""
    if not isinstance(value, dict) or not value:
        raise ValueError('gains must be an object of names to numbers, e.g. {"mouth": 1.3}')
    return MotionGains.from_mapping(value, current)


def _set(session: Session, msg: dict[str, Any]) -> None:
    if not _allow_set(session, time.monotonic()):
        _error(session, "rate_limited", f"settings may change at most {MAX_SETS_PER_S} times a second; "
               "this change was dropped")
        return
    current = session.engine.pending_settings
    new = current
    if "mode" in msg:
        if msg["mode"] not in [m.value for m in TransferMode]:
            _error(session, "bad_value", 'mode must be "relative" or "absolute"')
            return
        new = replace(new, mode=TransferMode(msg["mode"]))
    if "size" in msg:
        if msg["size"] not in CROP_SIZES_PX or isinstance(msg["size"], bool):
            _error(session, "bad_value", f"size must be one of {CROP_SIZES_PX}")
            return
        new = replace(new, crop_size_px=int(msg["size"]))
    if "engine" in msg:
        if msg["engine"] not in ENGINES:
            _error(session, "bad_value", f"engine must be one of {ENGINES}")
            return
        new = replace(new, engine=msg["engine"])
    if "gains" in msg:
        try:
            new = replace(new, gains=_gains(new.gains, msg["gains"]))
        except ValueError as e:
            _error(session, "bad_value", str(e)[:200])
            return
    if "eyes" in msg:
        if msg["eyes"] not in [m.value for m in EyesMode]:
            _error(session, "bad_value", f"eyes must be one of {[m.value for m in EyesMode]}")
            return
        new = replace(new, eyes=EyesMode(msg["eyes"]))
    if new != current:
        session.engine.request(new)
    session.send({"type": "settings", "settings": new.public()})


async def send_stats(session: Session, config: ServerConfig) -> None:
    """Every ``stats_interval_s`` while connected: the stats message, and a hint when the frame-rate
    limit the client should keep to changes (stats.fps_hint). Runs until cancelled."""
    while True:
        await asyncio.sleep(config.stats_interval_s)
        if session.state == SessionState.CONNECTED:
            snapshot = session.stats.snapshot()
            session.send({"type": "stats", **snapshot, "dropped": session.inbox.dropped + session.outbox.dropped,
                          "settings": session.engine.settings.public()})
            hint = fps_hint(session.fps_hint, float(snapshot["fps_in"]), float(snapshot["fps_out"]))
            if hint != session.fps_hint:
                session.fps_hint = hint
                session.send({"type": "hint", "max_fps": hint or MAX_HINT_FPS})
