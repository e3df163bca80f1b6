"""What every HTTP request goes through: the origin check, JSON errors, security headers, rate limits.

Errors are answered as ``{"code": str, "message": str}`` with a 4xx/5xx status, never a traceback.
The engine's errors (a refused photo) get their status from one table, ``ENGINE_ERROR_STATUS``.
"""
from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from enliven.engine.errors import (
    BadImageError,
    EnlivenError,
    FaceTooSmallError,
    ImageTooLargeError,
    NoFaceError,
    UnsupportedFormatError,
)

from .config import ServerConfig

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Engine errors -> HTTP statuses (the first kind that matches; any other EnlivenError: 422).
ENGINE_ERROR_STATUS: tuple[tuple[type[EnlivenError], int], ...] = (
    (UnsupportedFormatError, 415),
    (ImageTooLargeError, 422),  # too many pixels (the byte limit is enforced while reading: 413)
    (BadImageError, 422),
    (NoFaceError, 422),
    (FaceTooSmallError, 422),
)

# The page (index.html) only: where its scripts, styles, images and media may come from.
PAGE_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        # 'unsafe-eval' and 'wasm-unsafe-eval': the face landmarker's WebAssembly (embind builds its function
        # wrappers with new Function); still no inline script, and scripts only from this server
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval' 'unsafe-eval'; style-src 'self'; "
        "img-src 'self' blob: data:; "
        "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"),
    "Permissions-Policy": "camera=(self), microphone=(self)",
}


class HttpError(Exception):
    """A 4xx/5xx answer with a machine-readable code and a human message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    @classmethod
    def from_engine(cls, error: EnlivenError) -> HttpError:
        """The answer to an engine error: its code and message, the status of ENGINE_ERROR_STATUS."""
        status = next((s for kind, s in ENGINE_ERROR_STATUS if isinstance(error, kind)), 422)
        return cls(status, error.code, str(error))

    def response(self) -> web.Response:
        return web.json_response({"code": self.code, "message": self.message}, status=self.status,
                                 headers=self.headers)


def bearer_token(request: web.Request) -> str:
    """The token of ``Authorization: Bearer <token>``. Raises HttpError(401) when there is none."""
    auth = request.headers.get("Authorization", "")
    token = auth[7:].strip() if auth.startswith("Bearer ") else ""
    if not token:
        raise HttpError(401, "unauthorized", "expected the session token as 'Authorization: Bearer <token>'",
                        {"WWW-Authenticate": "Bearer"})
    return token


def client_key(request: web.Request) -> str:
    """What rate limits count per: the client's address."""
    return request.remote or "unknown"


# --- middleware ------------------------------------------------------------------------------
def origin_allowed(origin: str, request: web.Request, config: ServerConfig) -> bool:
    host = request.host
    return origin in (f"http://{host}", f"https://{host}") or origin in config.allowed_origins


def guard(config: ServerConfig) -> Middleware:
    """The middleware: origin check, JSON errors, security headers; never a traceback to the client."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        cross = origin is not None and origin in config.allowed_origins
        try:
            if origin is not None and not origin_allowed(origin, request, config):
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
            response = e.response()
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

    return middleware


# --- rate limits -----------------------------------------------------------------------------
class RateLimiter:
    """A token bucket per client address: ``burst`` at once, then ``rate_per_min``."""

    def __init__(self, rate_per_min: float, burst: int) -> None:
        self.rate_per_s = rate_per_min / 60.0
        self.burst = max(1, burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last update)

    def take(self, key: str) -> float:
        """Take one token. Returns 0 if allowed, else the seconds until one is available."""
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate_per_s)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate_per_s

    def check(self, key: str, what: str) -> None:
        """Take one token for ``key``. Raises HttpError(429) with Retry-After when there is none."""
        wait_s = self.take(key)
        if wait_s > 0:
            raise HttpError(429, "rate_limited", f"too many {what} from this address; try again shortly",
                            {"Retry-After": retry_after_s(wait_s)})

    def prune(self) -> None:
        """Forget addresses whose bucket is full again."""
        now = time.monotonic()
        full_after = self.burst / self.rate_per_s
        for key in [k for k, (_, last) in self._buckets.items() if now - last > full_after]:
            del self._buckets[key]


def retry_after_s(seconds: float) -> str:
    """A Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
