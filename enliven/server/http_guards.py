"""What every HTTP request goes through: the Host and origin checks, the client's address, JSON errors,
security headers, rate limits.

Errors are answered as ``{"code": str, "message": str}`` with a 4xx/5xx status, never a traceback.
The engine's errors (a refused photo) get their status from one table, ``ENGINE_ERROR_STATUS``.

Host check (DNS rebinding): a page on another site whose name is made to resolve to this server
reaches it with its own name in ``Host`` (and a matching ``Origin``). Only IP addresses, ``localhost``
(and ``*.localhost``) and the names given in ``allowed_hosts`` are served; anything else gets 403.

Client address: the TCP peer's address, or, when the peer is one of ``trusted_proxies``, the last
address of ``X-Forwarded-For`` that is not a trusted proxy. Rate limits and the per-client session
cap count per address (IPv4) or per /64 network (IPv6: one host usually holds a whole /64).
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from aiohttp.typedefs import Middleware

from enliven.engine.errors import (
    BadImageError,
    EnlivenError,
    FaceTooSmallError,
    ImageTooLargeError,
    ModelFileError,
    NoFaceError,
    UnsupportedFormatError,
)

from .config import ServerConfig

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Engine errors -> HTTP statuses (the first kind that matches; any other EnlivenError: 422).
ENGINE_ERROR_STATUS: tuple[tuple[type[EnlivenError], int], ...] = (
    (ModelFileError, 503),  # the server's own model files: not the client's fault (answered without details)
    (UnsupportedFormatError, 415),
    (ImageTooLargeError, 422),  # too many pixels (the byte limit is enforced while reading: 413)
    (BadImageError, 422),
    (NoFaceError, 422),
    (FaceTooSmallError, 422),
)

# The page (index.html) only: where its scripts, styles, images and media may come from.
PAGE_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
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
        """The answer to an engine error: its code and message, the status of ENGINE_ERROR_STATUS.
        A ModelFileError is the server's misconfiguration: logged, and answered without its details."""
        status = next((s for kind, s in ENGINE_ERROR_STATUS if isinstance(error, kind)), 422)
        if isinstance(error, ModelFileError):
            logger.warning("server misconfigured: %s", error)
            return cls(status, "server_misconfigured", "the server cannot animate photos right now (its model "
                                                       "files are missing or broken); try again later",
                       {"Retry-After": "60"})
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


# --- the client's address --------------------------------------------------------------------
CLIENT = web.RequestKey("client", str)  # the client's key, set by the middleware


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _key(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """What limits count per: an IPv4 address, or an IPv6 address's /64 network."""
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class ClientAddresses:
    """The client's key of a request: its peer's address, or behind a trusted proxy X-Forwarded-For's."""

    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self.trusted = tuple(ipaddress.ip_network(n, strict=False) for n in trusted_proxies)

    def _is_trusted(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(ip.version == net.version and ip in net for net in self.trusted)

    def key(self, request: web.Request) -> str:
        peer = _address(request.remote or "")
        if peer is None:
            return "unknown"
        if not self.trusted or not self._is_trusted(peer):
            return _key(peer)  # X-Forwarded-For from anyone else is ignored: it is the client's to write
        hops = [h for value in request.headers.getall("X-Forwarded-For", []) for h in value.split(",")]
        client = peer
        for hop in reversed(hops):  # the proxy appends the address it saw: read from the right
            ip = _address(hop)
            if ip is None:
                break  # a garbled entry: keep the last address that a trusted hop vouched for
            client = ip
            if not self._is_trusted(ip):
                break
        return _key(client)


def client_key(request: web.Request) -> str:
    """What rate limits count per: the client's address (see ClientAddresses), set by the middleware."""
    return request.get(CLIENT) or "unknown"


# --- middleware ------------------------------------------------------------------------------
def host_name(host: str) -> str:
    """The name of a Host header, lower case, without the port and the trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else ""
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def host_allowed(host: str | None, config: ServerConfig) -> bool:
    """Whether a request's Host names this server: an IP address, localhost, or one of allowed_hosts."""
    if not host:
        return False
    name = host_name(host)
    if not name:
        return False
    if _address(name) is not None or name == "localhost" or name.endswith(".localhost"):
        return True
    return name in {h.lower().rstrip(".") for h in config.allowed_hosts}


def origin_allowed(origin: str, request: web.Request, config: ServerConfig) -> bool:
    host = request.headers.get("Host", "")  # checked by host_allowed first
    return origin in (f"http://{host}", f"https://{host}") or origin in config.allowed_origins


def guard(config: ServerConfig) -> Middleware:
    """The middleware: Host and origin checks, JSON errors, security headers; never a traceback."""
    addresses = ClientAddresses(config.trusted_proxies)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        cross = origin is not None and origin in config.allowed_origins
        request[CLIENT] = addresses.key(request)
        try:
            if not host_allowed(request.headers.get("Host"), config):
                cross = False
                raise HttpError(403, "forbidden_host", "this server does not answer to that host name "
                                                       "(see --allow-host)")
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
    """A token bucket per client address: ``burst`` at once, then ``rate_per_min``.

    Addresses whose bucket is full again are forgotten (``prune``, run by the registry's reaper and
    whenever the table reaches ``max_keys``): the table holds only recently active addresses.
    """

    def __init__(self, rate_per_min: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate_per_s = rate_per_min / 60.0
        self.burst = max(1, burst)
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last update)
        self._pruned_s = time.monotonic()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Take one token. Returns 0 if allowed, else the seconds until one is available."""
        now = time.monotonic()
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            self.prune()
            if len(self._buckets) >= self.max_keys:  # a flood of fresh addresses: forget the oldest half
                for old in sorted(self._buckets, key=lambda k: self._buckets[k][1])[: self.max_keys // 2]:
                    del self._buckets[old]
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

    def prune(self, min_interval_s: float = 0.0) -> None:
        """Forget addresses whose bucket is full again (at most once per ``min_interval_s``)."""
        now = time.monotonic()
        if now - self._pruned_s < min_interval_s:
            return
        self._pruned_s = now
        full_after = self.burst / self.rate_per_s
        for key in [k for k, (_, last) in self._buckets.items() if now - last > full_after]:
            del self._buckets[key]


def retry_after_s(seconds: float) -> str:
    """A Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
