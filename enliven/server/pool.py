"""The server's side of the inference workers (worker.py): start, assign, call, replace, stop."""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from .protocol import ProtocolError, QuitRequest, ReadyReply, Reply, Request, StatsReply, StatsRequest, receive, send
from .session_animator import FP32, InferenceOptions
from .worker import worker_main

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 120.0  # a worker imports MediaPipe and warms up (a few seconds; more on a busy machine)
CALL_TIMEOUT_S = 60.0  # the longest a single request may take (a 25 MP photo's decode and face search)


class WorkerError(RuntimeError):
    """A worker process died or stopped answering; its sessions cannot go on."""


class WorkerHandle:
    """One worker process and the pipe to it. ``call`` is blocking: use it from a thread, not the event loop."""

    def __init__(self, index: int, inference: InferenceOptions = FP32) -> None:
        ctx = multiprocessing.get_context("spawn")  # never fork a process that runs threads and an event loop
        self.conn: Connection
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=worker_main, args=(child, inference), name=f"enliven-worker-{index}",
                                daemon=True)
        self.proc.start()
        child.close()
        self.index = index
        self.sessions: set[str] = set()
        self.alive = True
        self._lock = threading.Lock()

    def wait_ready(self) -> None:
        if not self.conn.poll(READY_TIMEOUT_S):
            self.kill()
            raise WorkerError(f"worker {self.index} did not start within {READY_TIMEOUT_S:g} s")
        try:
            ready = receive(self.conn)
        except (EOFError, OSError, ProtocolError) as e:
            self.kill()
            raise WorkerError(f"worker {self.index} failed to start") from e
        if not isinstance(ready, ReadyReply):
            self.kill()
            raise WorkerError(f"worker {self.index} sent {type(ready).__name__} instead of ReadyReply")

    def call(self, request: Request | Callable[[], Request], timeout_s: float = CALL_TIMEOUT_S) -> Reply:
        """Send one request and wait for its reply. ``request`` may be a function that makes it: it is called
        once this worker is free (another session's frame may have held it), so it can use what is newest then."""
        with self._lock:
            if not self.alive:
                raise WorkerError(f"worker {self.index} is gone")
            if callable(request):
                request = request()
            try:
                send(self.conn, request)
                if not self.conn.poll(timeout_s):
                    raise WorkerError(f"worker {self.index} did not answer {type(request).__name__} "
                                      f"within {timeout_s:g} s")
                reply = receive(self.conn)
            except WorkerError:
                self.kill()
                raise
            except (EOFError, OSError) as e:
                self.kill()
                raise WorkerError(f"worker {self.index} died") from e
            except ProtocolError as e:
                self.kill()
                raise WorkerError(f"worker {self.index} broke the protocol: {e}") from e
        return reply  # type: ignore[return-value]

    def kill(self) -> None:
        self.alive = False
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()

    def stop(self) -> None:
        """Ask the worker to exit; kill it if it does not within a few seconds."""
        if self.alive:
            try:
                with self._lock:
                    send(self.conn, QuitRequest())
            except (OSError, ValueError):
                pass
        self.proc.join(5)
        self.kill()


class WorkerPool:
    """A fixed number of worker processes; each session is pinned to the least-loaded live one."""

    def __init__(self, count: int, inference: InferenceOptions = FP32) -> None:
        self.count = count
        self.inference = inference  # how the workers run their sessions' refiners
        self.workers: list[WorkerHandle] = []
        self._next_index = 0

    def _spawn(self) -> WorkerHandle:
        handle = WorkerHandle(self._next_index, self.inference)
        self._next_index += 1
        return handle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.workers = [self._spawn() for _ in range(self.count)]
        await asyncio.gather(*(loop.run_in_executor(None, w.wait_ready) for w in self.workers))
        logger.info("%d inference worker process(es) ready", self.count)

    async def assign(self, sid: str) -> WorkerHandle:
        """The worker for a new session (replacing dead workers first)."""
        loop = asyncio.get_running_loop()
        for i, w in enumerate(self.workers):
            if not w.alive:
                logger.warning("replacing inference worker %d (it died)", w.index)
                fresh = self._spawn()
                self.workers[i] = fresh
                await loop.run_in_executor(None, fresh.wait_ready)
        worker = min((w for w in self.workers if w.alive), key=lambda w: len(w.sessions))
        worker.sessions.add(sid)
        return worker

    async def photos_alive(self) -> int:
        """Photos held by all workers (each counts after a garbage collection)."""
        loop = asyncio.get_running_loop()
        total = 0
        for w in self.workers:
            if w.alive:
                try:
                    reply = await loop.run_in_executor(None, w.call, StatsRequest())
                except WorkerError:
                    continue
                if isinstance(reply, StatsReply):
                    total += reply.photos_alive
        return total

    def state(self) -> list[dict[str, Any]]:
        """The workers, for /debug/state: index, alive, sessions (count), pid."""
        return [{"index": w.index, "alive": w.alive, "sessions": len(w.sessions), "pid": w.proc.pid}
                for w in self.workers]

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(None, w.stop) for w in self.workers))
        self.workers = []
