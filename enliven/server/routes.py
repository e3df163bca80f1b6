"""The HTTP routes: the page and the API, wired to sessions, uploads and signalling.

Routes (JSON errors are ``{"code": str, "message": str}``, see http_guards.py):
    GET    /                          the page (enliven/web), /static/<file> its assets (a fixed list),
                                      /static/vendor/face_mesh/<file> the in-browser face landmarker (vendor.py)
    GET    /api/health                {"status": "ok", "sessions", "max_sessions"}
    POST   /api/sessions              create: multipart form (photo file + consent=true) or no body
                                      (built-in photo) -> 201 {session_id, token, consent, ...}
    POST   /api/sessions/{id}/offer   {"type": "offer", "sdp"} + ``Authorization: Bearer <token>``
                                      -> {"type": "answer", "sdp"}; once per session
    GET    /api/sessions/{id}         + token -> {"state", ...}; 410 {"state": "ended", "reason"} for a while
                                      after it ended (how a page learns why its session went quiet)
    GET    /api/sessions/{id}/photo   the session's photo as decoded, at most 1024 px, re-encoded (PNG,
                                      no metadata)
    DELETE /api/sessions/{id}         with a bearer token: end the session and delete its photo now if the
                                      token is its own; 204 either way (liveness is not revealed)
    GET    /debug/state               counters for tests (only with debug_endpoints)
"""
from __future__ import annotations

import asyncio
import tracemalloc
from dataclasses import dataclass, field
from importlib import resources

from aiohttp import web

from enliven.engine.choices import ENGINES
from enliven.engine.defaults import BUILTIN_PHOTO

from . import signalling
from .backend import SessionBackend
from .config import ServerConfig
from .decoding import Decoder
from .ended import EndedSessions
from .engines import open_engine
from .http_guards import (
    PAGE_SECURITY_HEADERS,
    HttpError,
    RateLimiter,
    bearer_token,
    client_key,
)
from .ice_policy import IcePolicy
from .pool import WorkerPool
from .session_animator import DebugOptions, EngineSettings, InferenceOptions
from .sessions import Registry, Session
from .uploads import decode_upload, prepare_photo, read_body, read_create_form, within_body_timeout
from .vendor import vendor_file

# The page's files: a fixed table, so a request can never name a path on disk.
WEB_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "landmarks.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
TRACEMALLOC_TOP = 25  # allocation sites /debug/state lists while tracemalloc traces
RETENTION = ("the photo, and the consent record (its time and the photo's SHA-256), are kept in memory for "
             "this session only and deleted when it ends")


def load_assets() -> dict[str, tuple[bytes, str]]:
    """The page's files and the built-in photo (as default-photo.png): name -> (body, content type)."""
    web_dir = resources.files("enliven.web")
    assets = {name: (web_dir.joinpath(name).read_bytes(), ctype) for name, ctype in WEB_FILES.items()}
    photo = resources.files("enliven.engine.assets").joinpath(BUILTIN_PHOTO).read_bytes()
    assets["default-photo.png"] = (photo, "image/png")
    return assets


@dataclass
class ServerState:
    """What the routes share: built by the app factory; the worker pool starts with the app."""

    config: ServerConfig
    registry: Registry
    limiter: RateLimiter  # session creations per client address
    offer_limiter: RateLimiter  # offers per client address
    decoder: Decoder  # uploads are decoded in capped child processes
    assets: dict[str, tuple[bytes, str]] = field(default_factory=load_assets)
    pool: WorkerPool | None = None  # the inference worker processes; None: Animators run in threads
    backend: SessionBackend | None = None  # --cluster: sessions live in Ray actors elsewhere (enliven.cluster)
    ended: EndedSessions = field(default_factory=EndedSessions)  # recent endings, for the session status


STATE = web.AppKey("state", ServerState)


# --- the page --------------------------------------------------------------------------------
def _asset_response(request: web.Request, name: str) -> web.Response:
    found = request.app[STATE].assets.get(name)
    if found is None:
        raise HttpError(404, "not_found", "no such file")
    body, ctype = found
    headers = {"Cache-Control": "no-cache"}
    if name == "index.html":
        headers.update(PAGE_SECURITY_HEADERS)
    return web.Response(body=body, headers={"Content-Type": ctype, **headers})


async def index(request: web.Request) -> web.Response:
    return _asset_response(request, "index.html")


async def static(request: web.Request) -> web.Response:
    return _asset_response(request, request.match_info["name"])


# --- API -------------------------------------------------------------------------------------
async def health(request: web.Request) -> web.Response:
    reg = request.app[STATE].registry
    return web.json_response({"status": "ok", "sessions": len(reg.sessions), "max_sessions": reg.config.max_sessions})


async def debug_state(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = state.registry.state()
    body["ice"] = vars(IcePolicy.for_config(state.config).counters)
    body["asyncio_tasks"] = len(asyncio.all_tasks())
    if tracemalloc.is_tracing():  # ENLIVEN_TRACEMALLOC=1 (the churn benchmark): the largest allocation sites
        top = tracemalloc.take_snapshot().statistics("lineno")[:TRACEMALLOC_TOP]
        body["tracemalloc_top"] = [{"site": str(s.traceback[0]), "kib": round(s.size / 1024, 1)} for s in top]
    body["rate_limited_addresses"] = {"create": len(state.limiter), "offer": len(state.offer_limiter)}
    if state.pool is not None:
        body["workers"] = state.pool.state()
        body["photos_alive"] += await state.pool.photos_alive()
    if state.backend is not None:
        body["cluster"] = await state.backend.state()
        body["photos_alive"] += body["cluster"]["photos_alive"]
    return web.json_response(body)


def _check_capacity(registry: Registry, client: str) -> None:
    """Raises HttpError: 503 when the server is full, 429 when this client has its share of sessions."""
    config = registry.config
    if registry.full():
        raise HttpError(503, "busy", f"the server is at its limit of {config.max_sessions} sessions; try again "
                                     "in a minute", {"Retry-After": "30"})
    if registry.client_count(client) >= config.max_sessions_per_client:
        raise HttpError(429, "too_many_sessions", f"at most {config.max_sessions_per_client} sessions per client "
                                                  "address; end one first", {"Retry-After": "30"})


async def create_session(request: web.Request) -> web.Response:
    """Body first (within body_timeout_s; a stalled upload holds no session slot), then the photo decoded in
    a capped child, then a slot: capacity counts sessions and the preparations of their photos."""
    state = request.app[STATE]
    config, registry = state.config, state.registry
    client = client_key(request)
    state.limiter.check(client, "sessions created")
    _check_capacity(registry, client)  # refuse early, before the body is read (nothing is held yet)
    form = await read_create_form(request, config)
    size = form.crop_size_px(config.crop_size_px)
    form.check_consent()
    consent = form.consent_record()
    photo = await decode_upload(state.decoder, form.photo)
    form.photo = None  # the upload's bytes are dropped here: only the decoded pixels go on
    _check_capacity(registry, client)
    registry.reserve(client)
    try:
        sid, token = registry.new_ids()
        settings = EngineSettings(crop_size_px=size, engine=config.engine)
        debug = DebugOptions(config.echo_frame_ids, config.debug_step_delay_ms / 1e3)
        if state.backend is not None:  # placed on a cluster node (503 when no node has a free slot)
            engine = state.backend.open_engine(sid, token, settings, debug)
        else:
            engine = open_engine(sid, settings, debug, state.pool, registry.photos, InferenceOptions(config.precision))
        try:
            await prepare_photo(engine, photo)
        except BaseException:
            await engine.close()
            raise
        photo_kind = "builtin" if photo is None else "uploaded"
        del photo  # the engine holds the photo now (in its worker, or in this process for --workers 0)
        registry.add(Session(id=sid, token=token, engine=engine, photo_kind=photo_kind, client=client,
                             consent=consent))
    finally:
        registry.unreserve(client)
    return web.json_response({
        "session_id": sid, "token": token, "photo": photo_kind, "face_count": engine.face_count,
        "settings": engine.settings.public(), "engines": list(ENGINES),
        "offer_timeout_s": config.offer_timeout_s, "max_session_s": config.max_session_s,
        "heartbeat_interval_s": config.heartbeat_interval_s, "heartbeat_timeout_s": config.heartbeat_timeout_s,
        "retention": RETENTION, "consent": None if consent is None else consent.public(),
        "landmarks_only": config.landmarks_only,
    }, status=201)


def _authorized(request: web.Request) -> Session:
    token = bearer_token(request)
    session = request.app[STATE].registry.get(request.match_info["sid"])
    if session is None or not session.check_token(token):
        raise HttpError(403, "forbidden", "no live session with this id and token")
    return session


async def delete_session(request: web.Request) -> web.Response:
    """204 for any bearer token, whether or not the session is live (idempotent, and it reveals nothing);
    the session ends only when the token is its own. 401 without a token."""
    token = bearer_token(request)
    registry = request.app[STATE].registry
    session = registry.get(request.match_info["sid"])
    if session is not None and session.check_token(token):
        await registry.end(session, "deleted by the user")
    return web.Response(status=204)


async def session_status(request: web.Request) -> web.Response:
    state = request.app[STATE]
    sid = request.match_info["sid"]
    if state.registry.get(sid) is None:
        reason = state.ended.reason(sid, bearer_token(request))
        if reason is None:
            raise HttpError(403, "forbidden", "no session with this id and token")
        return web.json_response({"code": "gone", "message": f"the session ended: {reason}", "state": "ended",
                                  "reason": reason}, status=410)
    session = _authorized(request)
    extra = state.backend.describe(session) if state.backend is not None else {}
    return web.json_response({"session_id": session.id, "state": session.state.value, **extra})


async def session_photo(request: web.Request) -> web.Response:
    session = _authorized(request)
    try:
        body = await session.engine.photo_png()
    except RuntimeError as e:  # the session ended meanwhile (its thread or worker is gone)
        raise HttpError(410, "gone", "the photo has been deleted") from e
    if body is None:
        raise HttpError(410, "gone", "the photo has been deleted")
    return web.Response(body=body, headers={"Content-Type": "image/png", "Content-Disposition": "inline"})


async def offer(request: web.Request) -> web.Response:
    state = request.app[STATE]
    config = state.config
    state.offer_limiter.check(client_key(request), "offers")
    session = _authorized(request)
    signalling.check_offer_unused(session)
    if request.content_length is not None and request.content_length > config.max_offer_bytes:
        raise HttpError(413, "too_large", f"offers are limited to {config.max_offer_bytes} bytes")
    raw = await within_body_timeout(read_body(request, config.max_offer_bytes, "an offer"), config)
    sdp = signalling.parse_offer(raw)
    checked = signalling.check_offer_sdp(sdp, config)
    if state.backend is not None:  # the session's actor takes the offer and owns the peer connection
        local = await state.backend.answer(session, checked.sdp)
    else:
        local = await signalling.answer(session, checked, state.registry, config)
    return web.json_response({"type": local.type, "sdp": local.sdp})


def add_routes(app: web.Application, config: ServerConfig) -> None:
    r = app.router
    r.add_get("/", index)
    r.add_get("/static/{name}", static)
    r.add_get("/static/vendor/face_mesh/{name}", vendor_file)  # the in-browser face landmarker (vendor.py)
    r.add_get("/api/health", health)
    r.add_post("/api/sessions", create_session)
    r.add_post("/api/sessions/{sid}/offer", offer)
    r.add_get("/api/sessions/{sid}", session_status)
    r.add_get("/api/sessions/{sid}/photo", session_photo)
    r.add_delete("/api/sessions/{sid}", delete_session)
    if config.debug_endpoints:
        r.add_get("/debug/state", debug_state)
