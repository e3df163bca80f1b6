"""The server application: ``create_app(config)`` wires the routes (routes.py) behind the guards
(http_guards.py) to the session registry and the inference workers; ``serve`` runs it.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import tracemalloc
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from enliven.engine.defaults import builtin_photo

from .backend import SessionBackend
from .config import ServerConfig
from .decoding import DecodeLimits, Decoder, no_core_dumps
from .http_guards import RateLimiter, guard
from .pool import WorkerPool
from .routes import STATE, ServerState, add_routes
from .session_animator import InferenceOptions, warm_up
from .sessions import Registry
from .uploads import FORM_OVERHEAD_BYTES

logger = logging.getLogger(__name__)

LIMITER_PRUNE_INTERVAL_S = 10.0  # rate limiters forget idle addresses this often


def worker_count(config: ServerConfig) -> int:
    """Inference worker processes to start: the configured number, or one per core (at most max_sessions)."""
    if config.workers is not None:
        return config.workers
    return max(1, min(os.cpu_count() or 1, config.max_sessions))


def inference_options(config: ServerConfig, workers: int) -> InferenceOptions:
    """How the refiners run: the configured precision; with worker processes, the cores shared among them
    (one ONNX Runtime thread each when there is a worker per core: a second thread per worker only
    oversubscribes the cores and waits for its partner)."""
    if workers <= 0:
        return InferenceOptions(config.precision, generator=config.refiner)
    return InferenceOptions(config.precision, threads=max(1, usable_cores() // workers), generator=config.refiner)


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cluster_backend(config: ServerConfig) -> SessionBackend:
    """The front door of ``--cluster``: sessions as Ray actors on the cluster's nodes."""
    from enliven.cluster.frontdoor import ClusterFrontDoor  # Ray (the cluster extra), only with --cluster

    return ClusterFrontDoor(config)


def create_app(config: ServerConfig) -> web.Application:
    """The aiohttp application (the registry and the worker pool, or the cluster, start and stop with it)."""
    app = web.Application(middlewares=[guard(config)],
                          client_max_size=config.max_upload_bytes + FORM_OVERHEAD_BYTES)
    backend = cluster_backend(config) if config.cluster is not None else None
    registry = backend.registry if backend is not None else Registry(config)
    limits = DecodeLimits(config.max_upload_bytes, config.max_photo_pixels, config.decode_memory_bytes,
                          config.decode_cpu_s)
    state = ServerState(config, registry, RateLimiter(config.create_rate_per_min, config.create_burst),
                        RateLimiter(config.offer_rate_per_min, config.offer_burst),
                        Decoder(limits, config.max_concurrent_decodes), backend=backend)
    registry.on_end.append(lambda s: state.ended.add(s.id, s.token, s.end_reason))
    registry.on_reap += [lambda: state.limiter.prune(LIMITER_PRUNE_INTERVAL_S),
                         lambda: state.offer_limiter.prune(LIMITER_PRUNE_INTERVAL_S)]
    app[STATE] = state

    async def on_startup(app: web.Application) -> None:
        await Decoder.start()
        workers = worker_count(config)
        if backend is not None:  # no Animator runs here: the cluster's nodes hold them
            await backend.start()
        elif workers > 0:
            pool = WorkerPool(workers, inference_options(config, workers))
            state.pool = pool
            await pool.start()
        else:  # run MediaPipe once in this process, so the first in-process session starts quickly
            await asyncio.get_running_loop().run_in_executor(None, warm_up, builtin_photo(), (config.engine,),
                                                             inference_options(config, 0))
        state.registry.start()

    async def on_shutdown(app: web.Application) -> None:
        await state.registry.stop()
        if state.pool is not None:
            await state.pool.stop()
        if backend is not None:
            await backend.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    add_routes(app, config)
    return app


class _OneLineBadRequests(logging.Filter):
    """aiohttp logs a request it cannot parse (a broken chunked body, a malformed header) at ERROR with a
    traceback: it is the client's fault, and one line says enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "bad request from a client: %s", (str(exc).splitlines()[0][:200],)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


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
    no_core_dumps()  # the server holds uploads for a moment (it stays readable for monitoring tools)
    logging.getLogger("aiohttp.server").addFilter(_OneLineBadRequests())
    if config.debug_endpoints and os.environ.get("ENLIVEN_TRACEMALLOC"):
        tracemalloc.start()  # /debug/state then lists the largest allocation sites (benchmarks/gates.py churn)
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
