"""HTTP routes and WebRTC signalling: wires the page and the API to sessions and their media.

Routes (JSON errors are ``{"code": str, "message": str}``):
    GET    /                          the page (enliven/web), /static/<file> its assets (a fixed list)
    GET    /api/health                {"status": "ok", "sessions", "max_sessions"}
    POST   /api/sessions              create: multipart form (photo file + consent=true) or no body
                                      (built-in photo) -> 201 {session_id, token, ...}
    POST   /api/sessions/{id}/offer   {"type": "offer", "sdp"} + ``Authorization: Bearer <token>``
                                      -> {"type": "answer", "sdp"}; once per session
    GET    /api/sessions/{id}/photo   the session's photo as decoded and re-encoded (PNG, no metadata)
    DELETE /api/sessions/{id}         end the session and delete its photo now; 204 even if gone
    GET    /debug/state               counters for tests (only with debug_endpoints)
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import BodyPartReader, web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from enliven.engine.errors import (
    BadImageError,
    EnlivenError,
    FaceTooSmallError,
    ImageTooLargeError,
    NoFaceError,
    UnsupportedFormatError,
)

from . import channel as control
from ._jitter import use_low_latency_jitter_buffer
from .config import ServerConfig
from .media import (
    AnimatedTrack,
    DelayedAudioTrack,
    EngineSettings,
    NewestSlot,
    ProcessEngine,
    SessionEngine,
    ThreadEngine,
    drain,
    median_server_delay_s,
    process,
)
from .pool import WorkerError, WorkerPool
from .sessions import RateLimiter, Registry, Session, SessionState, retry_after_s
from .worker import generators

logger = logging.getLogger(__name__)

REGISTRY = web.AppKey("registry", Registry)
CONFIG = web.AppKey("config", ServerConfig)
LIMITER = web.AppKey("limiter", RateLimiter)
ASSETS = web.AppKey("assets", dict)
POOL = web.AppKey("pool", list)  # [WorkerPool] when inference runs in worker processes, else []

FORM_OVERHEAD_BYTES = 64 * 1024  # multipart headers and small fields on top of the photo
SMALL_FIELD_BYTES = 1024  # consent and other text fields
SDP_SETUP_TIMEOUT_S = 10.0  # setRemoteDescription + createAnswer (host candidates only: well under 1 s)

# The page's files: a fixed table, so a request can never name a path on disk.
_WEB_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'")


class HttpError(Exception):
    """A 4xx/5xx answer with a machine-readable code and a human message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def _error_response(e: HttpError) -> web.Response:
    return web.json_response({"code": e.code, "message": e.message}, status=e.status, headers=e.headers)


# Upload errors from the engine -> HTTP statuses.
_IMAGE_STATUS: tuple[tuple[type[EnlivenError], int], ...] = (
    (UnsupportedFormatError, 415),
    (ImageTooLargeError, 422),  # too many pixels (the byte limit is enforced while reading: 413)
    (BadImageError, 422),
    (NoFaceError, 422),
    (FaceTooSmallError, 422),
)


# --- middleware ------------------------------------------------------------------------------
def _origin_allowed(origin: str, request: web.Request, config: ServerConfig) -> bool:
    host = request.host
    return origin in (f"http://{host}", f"https://{host}") or origin in config.allowed_origins


@web.middleware
async def _guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                 ) -> web.StreamResponse:
    """Origin check, JSON errors, security headers; never a traceback to the client."""
    config = request.app[CONFIG]
    origin = request.headers.get("Origin")
    cross = origin is not None and origin in config.allowed_origins
    try:
        if origin is not None and not _origin_allowed(origin, request, config):
            raise HttpError(403, "forbidden_origin", "requests from other sites are not allowed")
        if request.method == "OPTIONS":
            if not cross:
                raise HttpError(403, "forbidden_origin", "cross-origin requests are not allowed")
            response: web.StreamResponse = web.Response(status=204, headers={
                "Access-Control-Allow-Methods": "GET, POST, DELETE",
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Max-Age": "600"})
        else:
            response = await handler(request)
    except HttpError as e:
        response = _error_response(e)
    except web.HTTPException as e:
        if e.status >= 400:
            response = web.json_response({"code": re.sub(r"\W+", "_", e.reason.lower()), "message": e.reason},
                                         status=e.status)
        else:
            raise
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("unexpected error on %s %s", request.method, request.path)
        response = web.json_response({"code": "internal", "message": "internal error"}, status=500)
    h = response.headers
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "no-referrer")
    h.setdefault("X-Frame-Options", "DENY")
    if request.path.startswith("/api/") or request.path.startswith("/debug/"):
        h.setdefault("Cache-Control", "no-store")
    if cross:
        h["Access-Control-Allow-Origin"] = origin  # type: ignore[assignment]
        h["Vary"] = "Origin"
    return response


# --- static page -----------------------------------------------------------------------------
def _load_assets() -> dict[str, tuple[bytes, str]]:
    web_dir = resources.files("enliven.web")
    assets = {name: (web_dir.joinpath(name).read_bytes(), ctype) for name, ctype in _WEB_FILES.items()}
    photo = resources.files("enliven.engine.assets").joinpath("astronaut.png").read_bytes()
    assets["default-photo.png"] = (photo, "image/png")
    return assets


def _asset_response(request: web.Request, name: str) -> web.Response:
    found = request.app[ASSETS].get(name)
    if found is None:
        raise HttpError(404, "not_found", "no such file")
    body, ctype = found
    headers = {"Cache-Control": "no-cache"}
    if name == "index.html":
        headers["Content-Security-Policy"] = _CSP
        headers["Permissions-Policy"] = "camera=(self), microphone=(self)"
    return web.Response(body=body, headers={"Content-Type": ctype, **headers})


async def index(request: web.Request) -> web.Response:
    return _asset_response(request, "index.html")


async def static(request: web.Request) -> web.Response:
    return _asset_response(request, request.match_info["name"])


# --- API -------------------------------------------------------------------------------------
async def health(request: web.Request) -> web.Response:
    reg = request.app[REGISTRY]
    return web.json_response({"status": "ok", "sessions": len(reg.sessions), "max_sessions": reg.config.max_sessions})


async def debug_state(request: web.Request) -> web.Response:
    state = request.app[REGISTRY].state()
    pool = request.app[POOL]
    if pool:
        state["workers"] = [{"index": w.index, "alive": w.alive, "sessions": len(w.sessions), "pid": w.proc.pid}
                            for w in pool[0].workers]
        state["photos_alive"] += await pool[0].photos_alive()
    return web.json_response(state)


@dataclass
class _CreateForm:
    photo: bytes | None = None
    consent: bool = False
    size: int | None = None


async def _read_part(part: BodyPartReader, limit: int, status: int, what: str) -> bytes:
    data = bytearray()
    while True:
        chunk = await part.read_chunk(64 * 1024)
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > limit:
            raise HttpError(status, "too_large", f"{what} is limited to {limit} bytes")


async def _read_create_form(request: web.Request, config: ServerConfig) -> _CreateForm:
    limit = config.max_upload_bytes
    if request.content_length is not None and request.content_length > limit + FORM_OVERHEAD_BYTES:
        raise HttpError(413, "too_large", f"photos are limited to {limit // 2**20} MB; "
                                          f"got a {request.content_length}-byte request")
    form = _CreateForm()
    ctype = request.content_type
    if not request.body_exists:
        return form
    if ctype == "application/json":
        raw = await request.content.read(SMALL_FIELD_BYTES + 1)
        if len(raw) > SMALL_FIELD_BYTES:
            raise HttpError(413, "too_large", "a JSON body here carries options only; upload photos as a form")
        try:
            body = json.loads(raw or b"{}")
        except ValueError as e:
            raise HttpError(400, "bad_request", "expected a JSON object") from e
        if not isinstance(body, dict):
            raise HttpError(400, "bad_request", "expected a JSON object")
        form.size = body.get("size")
        return form
    if ctype != "multipart/form-data":
        raise HttpError(415, "unsupported_media_type", "expected multipart/form-data (photo + consent) or no body")
    try:
        reader = await request.multipart()
        total = 0
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise HttpError(400, "bad_request", "nested multipart is not accepted")
            if part.name == "photo":
                if form.photo is not None:
                    raise HttpError(400, "bad_request", "one photo per session")
                form.photo = await _read_part(part, limit, 413, "a photo")
                total += len(form.photo)
            else:
                value = await _read_part(part, SMALL_FIELD_BYTES, 400, f"the field {part.name!r:.40}")
                total += len(value)
                text = value.decode("utf-8", "replace").strip().lower()
                if part.name == "consent":
                    form.consent = text in ("true", "1", "yes", "on")
                elif part.name == "size":
                    form.size = int(text) if text.isdigit() else -1
            if total > limit + FORM_OVERHEAD_BYTES:
                raise HttpError(413, "too_large", f"the request is limited to {limit} bytes")
    except HttpError:
        raise
    except (ValueError, AssertionError, UnicodeDecodeError) as e:  # what aiohttp raises on broken multipart
        raise HttpError(400, "bad_request", f"malformed multipart form ({type(e).__name__})") from e
    return form


def _client_key(request: web.Request) -> str:
    return request.remote or "unknown"


async def create_session(request: web.Request) -> web.Response:
    app = request.app
    config, registry = app[CONFIG], app[REGISTRY]
    wait_s = app[LIMITER].take(_client_key(request))
    if wait_s > 0:
        raise HttpError(429, "rate_limited", "too many sessions created from this address; try again shortly",
                        {"Retry-After": retry_after_s(wait_s)})
    if registry.full():
        raise HttpError(503, "busy", f"the server is at its limit of {config.max_sessions} sessions; try again "
                                     "in a minute", {"Retry-After": "30"})
    registry.reserved += 1
    try:
        form = await _read_create_form(request, config)
        size = config.crop_size_px if form.size is None else form.size
        if size not in control.SIZES_PX:
            raise HttpError(400, "bad_value", f"size must be one of {control.SIZES_PX}")
        if form.photo is not None and not form.consent:
            raise HttpError(400, "consent_required", "confirm that this is you or that you have this person's "
                                                     "permission (consent=true) before uploading a photo")
        sid, token = registry.new_ids()
        settings = EngineSettings(crop_size_px=size, engine=config.engine)
        pool = app[POOL]
        engine: SessionEngine = (
            ProcessEngine(sid, settings, pool[0], config.echo_frame_ids, config.debug_step_delay_ms) if pool
            else ThreadEngine(sid, settings, registry.photos, config.echo_frame_ids, config.debug_step_delay_ms))
        try:
            photo_kind = await _prepare(engine, form.photo, config)
        except BaseException:
            await engine.close()
            raise
        form.photo = None  # the upload's bytes are dropped here; only the engine holds the decoded pixels
        session = Session(id=sid, token=token, engine=engine, photo_kind=photo_kind)
        registry.add(session)
    finally:
        registry.reserved -= 1
    return web.json_response({
        "session_id": sid, "token": token, "photo": photo_kind, "face_count": engine.face_count,
        "settings": engine.settings.public(), "engines": list(generators()),
        "offer_timeout_s": config.offer_timeout_s,
        "heartbeat_interval_s": config.heartbeat_interval_s, "heartbeat_timeout_s": config.heartbeat_timeout_s,
        "retention": "the photo is kept in memory for this session only and deleted when it ends",
    }, status=201)


async def _prepare(engine: SessionEngine, upload: bytes | None, config: ServerConfig) -> str:
    """Decode the upload (or take the built-in photo) and prepare the Animator, off the event loop."""
    if upload is not None and not upload:
        raise HttpError(422, "bad_image", "the photo is empty")
    try:
        faces = await engine.prepare(upload, config.max_photo_pixels, config.max_upload_bytes)
    except WorkerError as e:
        logger.warning("photo preparation failed: %s", e)
        raise HttpError(503, "busy", "the animation worker is restarting; try again in a few seconds",
                        {"Retry-After": "5"}) from e
    except EnlivenError as e:
        status = next((s for kind, s in _IMAGE_STATUS if isinstance(e, kind)), 422)
        logger.info("upload refused: %s", e.code)
        raise HttpError(status, e.code, str(e)) from e
    if faces > 1:
        logger.info("upload refused: multiple_faces")
        raise HttpError(422, "multiple_faces", f"the photo shows {faces} faces; use a photo of one person")
    return "builtin" if upload is None else "uploaded"


def _authorized(request: web.Request) -> Session:
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer ") or not auth[7:].strip():
        raise HttpError(401, "unauthorized", "expected the session token as 'Authorization: Bearer <token>'",
                        {"WWW-Authenticate": "Bearer"})
    session = request.app[REGISTRY].get(request.match_info["sid"])
    if session is None or not session.check_token(auth[7:].strip()):
        raise HttpError(403, "forbidden", "no live session with this id and token")
    return session


async def delete_session(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    if registry.get(request.match_info["sid"]) is None:
        return web.Response(status=204)  # idempotent: nothing is left
    session = _authorized(request)
    await registry.end(session, "deleted by the user")
    return web.Response(status=204)


async def session_photo(request: web.Request) -> web.Response:
    session = _authorized(request)
    try:
        body = await session.engine.photo_png()
    except RuntimeError as e:  # the session ended meanwhile (its thread or worker is gone)
        raise HttpError(410, "gone", "the photo has been deleted") from e
    if body is None:
        raise HttpError(410, "gone", "the photo has been deleted")
    return web.Response(body=body, headers={"Content-Type": "image/png", "Content-Disposition": "inline"})


# --- signalling ------------------------------------------------------------------------------
_MEDIA_RE = re.compile(r"^m=(\w+) ", re.M)
_FINGERPRINT_RE = re.compile(
    r"^a=fingerprint:(sha-1|sha-224|sha-256|sha-384|sha-512) [0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})+$")


def check_offer_sdp(sdp: str, config: ServerConfig) -> None:
    """Cheap structural checks before aiortc parses the offer. Raises HttpError(400)."""
    def bad(message: str) -> HttpError:
        return HttpError(400, "bad_offer", message)

    if not sdp.startswith("v=0"):
        raise bad("expected an SDP offer starting with v=0")
    kinds = _MEDIA_RE.findall(sdp)
    if len(kinds) > config.max_sdp_media:
        raise bad(f"expected at most {config.max_sdp_media} media sections; got {len(kinds)}")
    if kinds.count("video") != 1:
        raise bad(f"expected exactly one video section (the webcam); got {kinds.count('video')}")
    if kinds.count("audio") > 1 or kinds.count("application") != 1:
        raise bad("expected at most one audio section and exactly one data channel (m=application)")
    if any(k not in ("video", "audio", "application") for k in kinds):
        raise bad("expected only video, audio and application media sections")
    if sdp.count("a=candidate:") > config.max_sdp_candidates:
        raise bad(f"expected at most {config.max_sdp_candidates} ICE candidates")
    for needed in ("a=fingerprint:", "a=ice-ufrag:", "a=ice-pwd:", "a=setup:"):
        if needed not in sdp:
            raise bad(f"the offer has no {needed[2:-1]}")
    for line in re.findall(r"^a=fingerprint:.*$", sdp, re.M):
        if not _FINGERPRINT_RE.match(line.rstrip("\r")):
            raise bad("expected a=fingerprint:sha-256 (or sha-384/512) followed by colon-separated hex bytes")
    sections = _MEDIA_RE.split(sdp)[1:]  # aiortc 1.16 breaks on a media section without a=mid
    if any("a=mid:" not in body for body in sections[1::2]):
        raise bad("every media section needs an a=mid line")


async def offer(request: web.Request) -> web.Response:
    session = _authorized(request)
    app = request.app
    config, registry = app[CONFIG], app[REGISTRY]
    if session.state != SessionState.CREATED or session.pc is not None:
        raise HttpError(409, "offer_used", "this session has already received its offer; create a new session")
    raw = await request.content.read(config.max_offer_bytes + 1)
    if len(raw) > config.max_offer_bytes:
        raise HttpError(413, "too_large", f"offers are limited to {config.max_offer_bytes} bytes")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise HttpError(400, "bad_offer", 'expected JSON {"type": "offer", "sdp": "..."}') from e
    if not isinstance(body, dict) or body.get("type") != "offer" or not isinstance(body.get("sdp"), str):
        raise HttpError(400, "bad_offer", 'expected JSON {"type": "offer", "sdp": "..."}')
    sdp: str = body["sdp"]
    check_offer_sdp(sdp, config)
    if session.state != SessionState.CREATED or session.pc is not None:  # a concurrent offer won
        raise HttpError(409, "offer_used", "this session has already received its offer")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    session.pc = pc
    _wire(session, pc, registry, config)
    try:
        await asyncio.wait_for(pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer")),
                               SDP_SETUP_TIMEOUT_S)
        if not any(t.kind == "video" for t in session.remote_tracks):
            raise ValueError("no usable video track in the offer")
        answer = await asyncio.wait_for(pc.createAnswer(), SDP_SETUP_TIMEOUT_S)
        await asyncio.wait_for(pc.setLocalDescription(answer), SDP_SETUP_TIMEOUT_S)
        if not any(t.sender.track is not None and t.kind == "video" for t in pc.getTransceivers()):
            raise ValueError("no video codec in common")
    except asyncio.CancelledError:
        raise
    except Exception as e:  # aiortc raises many kinds on bad SDP; all are the client's fault here
        await _drop_pc(session)
        logger.info("session %s: offer refused: %s", session.short, type(e).__name__)
        detail = str(e)[:200] if isinstance(e, ValueError) and str(e) else f"malformed SDP ({type(e).__name__})"
        raise HttpError(400, "bad_offer", f"the offer could not be used: {detail}") from e
    if session.state == SessionState.ENDED:
        raise HttpError(403, "forbidden", "the session ended")
    session.state = SessionState.OFFERED
    session.offered_s = time.monotonic()
    local = pc.localDescription
    return web.json_response({"type": local.type, "sdp": local.sdp})


async def _drop_pc(session: Session) -> None:
    """Undo a failed offer: the session may try again with a new one."""
    pc, session.pc = session.pc, None
    for task in list(session.tasks):
        task.cancel()
    session.remote_tracks.clear()
    session.inbox.close()
    session.outbox.close()
    if pc is not None:
        try:
            await pc.close()
        except Exception as e:  # aiortc may fail to close a connection it could not set up
            logger.info("session %s: closing a refused peer connection: %s", session.short, type(e).__name__)
    session.inbox, session.outbox = NewestSlot(), NewestSlot()


def _wire(session: Session, pc: RTCPeerConnection, registry: Registry, config: ServerConfig) -> None:
    """The peer connection's callbacks: tracks, the data channel, connection state."""

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if session.pc is not pc:
            return
        session.remote_tracks.append(track)
        if track.kind == "video":
            if config.low_latency_jitter_buffer:
                for t in pc.getTransceivers():
                    if t.receiver.track is track and not use_low_latency_jitter_buffer(t.receiver):
                        logger.warning("aiortc's jitter buffer is not as expected; keeping it (+1 frame latency)")
            pc.addTrack(AnimatedTrack(session.outbox, session.stats))
            session.spawn(_drain_then_end(session, track, registry), "drain")
            session.spawn(_process_then_end(session, registry), "process")
        elif track.kind == "audio":  # the microphone comes back, delayed to stay in sync with the video
            pc.addTrack(DelayedAudioTrack(track, lambda: median_server_delay_s(session.stats)))

    @pc.on("datachannel")
    def on_datachannel(ch: Any) -> None:
        if session.pc is not pc or session.channel is not None:
            ch.close()
            return
        session.channel = ch

        @ch.on("message")
        def on_message(message: str | bytes) -> None:
            control.handle_message(session, registry, config, message)

        @ch.on("close")
        def on_close() -> None:
            if session.pc is pc:
                registry.end_soon(session, "data channel closed")

        session.spawn(_send_stats(session, config), "stats")

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if session.pc is pc and pc.connectionState in ("failed", "closed"):
            registry.end_soon(session, f"connection {pc.connectionState}")


async def _drain_then_end(session: Session, track: MediaStreamTrack, registry: Registry) -> None:
    await drain(track, session.inbox, session.stats)
    registry.end_soon(session, "webcam track ended")


async def _process_then_end(session: Session, registry: Registry) -> None:
    await process(session.engine, session.inbox, session.outbox, session.stats,
                  lambda found: session.send({"type": "face", "found": found}))
    registry.end_soon(session, "inference worker failed")  # a no-op when the session is already ending


async def _send_stats(session: Session, config: ServerConfig) -> None:
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


MIN_HINT_FPS, MAX_HINT_FPS = 12, 30  # never ask for fewer than 12 fps: motion would look jerky


def fps_hint(current: int | None, fps_in: float, fps_out: float) -> int | None:
    """The frame rate to ask the client for: a little above what the server animates when it drops
    more than a quarter of the webcam frames (decoding frames that are then dropped costs CPU on both
    sides), raised again in steps while it keeps up. None: no limit."""
    if fps_in < 5:  # starting, idle or face-less: no evidence either way
        return current
    if fps_out < 0.75 * fps_in:
        target = max(MIN_HINT_FPS, min(MAX_HINT_FPS, math.ceil(fps_out * 1.25) + 1))
        return target if current is None or target < current else current
    if current is not None and fps_out >= 0.9 * fps_in and fps_in >= 0.8 * current:
        return None if current + 3 >= MAX_HINT_FPS else current + 3
    return current


# --- application -----------------------------------------------------------------------------
def _warm_up() -> None:
    """Run MediaPipe once in this process, so the first in-process session starts quickly."""
    import numpy as np

    from enliven.animation.animator import Animator, AnimatorConfig
    from enliven.engine.defaults import builtin_photo

    with Animator(AnimatorConfig(crop_size_px=256, output="crop")) as animator:
        animator.prepare(builtin_photo())
        animator.step(np.zeros((480, 640, 3), np.uint8), t=0.0)


def worker_count(config: ServerConfig) -> int:
    """Inference worker processes to start: the configured number, or one per core (at most max_sessions)."""
    if config.workers is not None:
        return config.workers
    return max(1, min(os.cpu_count() or 1, config.max_sessions))


def create_app(config: ServerConfig) -> web.Application:
    """The aiohttp application (the registry starts and stops with it)."""
    app = web.Application(middlewares=[_guard], client_max_size=config.max_upload_bytes + FORM_OVERHEAD_BYTES)
    app[CONFIG] = config
    app[REGISTRY] = Registry(config)
    app[LIMITER] = RateLimiter(config.create_rate_per_min, config.create_burst)
    app[ASSETS] = _load_assets()
    app[POOL] = []

    async def on_startup(app: web.Application) -> None:
        workers = worker_count(config)
        if workers > 0:
            pool = WorkerPool(workers)
            app[POOL].append(pool)
            await pool.start()
        else:
            await asyncio.get_running_loop().run_in_executor(None, _warm_up)
        app[REGISTRY].start()

    async def on_shutdown(app: web.Application) -> None:
        await app[REGISTRY].stop()
        for pool in app[POOL]:
            await pool.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    r = app.router
    r.add_get("/", index)
    r.add_get("/static/{name}", static)
    r.add_get("/api/health", health)
    r.add_post("/api/sessions", create_session)
    r.add_post("/api/sessions/{sid}/offer", offer)
    r.add_get("/api/sessions/{sid}/photo", session_photo)
    r.add_delete("/api/sessions/{sid}", delete_session)
    if config.debug_endpoints:
        r.add_get("/debug/state", debug_state)
    return app


def _exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """aiortc's own background tasks can fail on a peer that sent a broken offer; that peer's
    session is reaped by its timeouts. Log those in one line; anything else as asyncio would."""
    task, exc = context.get("future"), context.get("exception")
    coro = getattr(task, "get_coro", lambda: None)()
    name = getattr(coro, "__qualname__", "")
    if exc is not None and name.startswith("RTC"):
        logger.warning("aiortc background task %s failed: %s: %s", name, type(exc).__name__, str(exc)[:200])
        return
    loop.default_exception_handler(context)


async def serve(config: ServerConfig, ready: Callable[[str], None] | None = None) -> None:
    """Run the server until SIGINT/SIGTERM (or cancellation); ``ready(url)`` once it listens."""
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()  # stops the inference workers
        raise
    host, port = runner.addresses[0][:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    if ready is not None:
        ready(url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_exception_handler)
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    try:
        await stop.wait()
    finally:
        logger.info("shutting down")
        await runner.cleanup()
