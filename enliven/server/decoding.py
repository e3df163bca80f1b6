"""Uploaded photos are decoded in a short-lived child process with a memory and a time limit.

A photo within the byte and pixel limits can still make a decoder work hard: 16-bit samples and alpha
make large intermediate copies (a 25 MP RGBA 16-bit PNG needs several hundred MB), and a decoder bug
could crash or hang. ``decode_upload`` hands the file to a fresh child (forked from multiprocessing's
fork server, which has the image modules loaded: ~10 ms), which

* limits its own address space to what it started with plus ``decode_memory_bytes`` (RLIMIT_AS) and
  its CPU time to ``decode_cpu_s`` (RLIMIT_CPU), writes no core file and cannot be ptrace'd or dumped
  (RLIMIT_CORE 0, PR_SET_DUMPABLE 0),
* decodes with ``engine.image_io.load_photo`` (allowlist, pixel limit from the header, EXIF
  orientation, nothing but pixels kept),
* sends back the pixels, or the refusal.

The parent waits at most five times the CPU limit (the machine may be busy) and kills the child after
that. Out of memory, out of time or killed: ImageTooLargeError; crashed: BadImageError. At most
``max_concurrent_decodes`` children run at once. The upload's bytes never reach the inference workers.
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import resource
from dataclasses import dataclass
from multiprocessing.connection import Connection

import numpy as np

from enliven.engine.errors import (
    BadImageError,
    EnlivenError,
    ImageTooLargeError,
    error_from_code,
)
from enliven.engine.image_io import load_photo

logger = logging.getLogger(__name__)

WALL_FACTOR = 5.0  # the wall-clock limit is this many times the CPU limit
PR_SET_DUMPABLE = 4  # prctl(2)
_PRELOAD = ["enliven.engine.image_io", "enliven.server.decoding"]


@dataclass(frozen=True)
class DecodeLimits:
    max_bytes: int  # encoded size limit
    max_pixels: int  # width * height limit, checked from the header
    memory_bytes: int  # address space the child may add to what it started with
    cpu_s: int  # CPU seconds the child may use

    @property
    def wall_s(self) -> float:
        return self.cpu_s * WALL_FACTOR


def no_core_dumps() -> None:
    """This process (and the children it starts afterwards) writes no core file."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def harden_process(memory_bytes: int | None = None, cpu_s: int | None = None) -> None:
    """Make this process keep its memory to itself: no core file, not dumpable (no ptrace attach, no
    /proc/<pid>/mem for others); optionally limit its added address space and its CPU time (Linux)."""
    no_core_dumps()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the core limit still applies
        pass
    if memory_bytes is not None:
        with open("/proc/self/statm") as f:
            now = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = now + memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if cpu_s is not None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))


def _child(conn: Connection, limits: DecodeLimits) -> None:
    """The decoding child: one upload in, its pixels (or its refusal) out."""
    try:
        harden_process(limits.memory_bytes, limits.cpu_s)
        data = conn.recv_bytes(limits.max_bytes + 1)
        try:
            photo = load_photo(data, max_pixels=limits.max_pixels, max_bytes=limits.max_bytes)
        except EnlivenError as e:
            conn.send(("refused", e.code, str(e)))
            return
        except MemoryError:
            conn.send(("refused", ImageTooLargeError.code,
                       f"decoding this photo needs more than {limits.memory_bytes // 2**20} MB"))
            return
        del data
        conn.send(("ok", photo.shape[0], photo.shape[1]))
        conn.send_bytes(memoryview(np.ascontiguousarray(photo)).cast("B"))
    except (OSError, EOFError):  # the parent gave up on us
        pass
    finally:
        conn.close()


def _context() -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def decode_blocking(upload: bytes, limits: DecodeLimits) -> np.ndarray:
    """Decode ``upload`` in a child process: (H, W, 3) uint8 RGB (read-only). Blocking: call from a thread.

    Raises the engine's BadImageError, UnsupportedFormatError, ImageTooLargeError.
    """
    if len(upload) > limits.max_bytes:
        raise ImageTooLargeError(f"expected at most {limits.max_bytes} bytes; got {len(upload)}")
    ctx = _context()
    here, there = ctx.Pipe(duplex=True)
    child = ctx.Process(target=_child, args=(there, limits), name="enliven-decode", daemon=True)
    child.start()
    there.close()
    try:
        here.send_bytes(upload)
        if not here.poll(limits.wall_s):
            raise ImageTooLargeError(f"decoding this photo took longer than {limits.wall_s:g} s")
        head = here.recv()
        if head[0] == "refused":
            raise error_from_code(head[1], head[2])
        _, height, width = head
        if not here.poll(limits.wall_s):
            raise ImageTooLargeError(f"decoding this photo took longer than {limits.wall_s:g} s")
        pixels = here.recv_bytes(height * width * 3 + 1)
        if len(pixels) != height * width * 3:
            raise BadImageError("the decoder returned a broken image")
        return np.frombuffer(pixels, np.uint8).reshape(height, width, 3)  # read-only, over the received bytes
    except (EOFError, OSError) as e:  # the child died: killed by its limits, or the decoder crashed
        child.join(1.0)
        code = child.exitcode
        if code is not None and code < 0 and -code in (9, 24):  # SIGKILL / SIGXCPU: over its limits
            raise ImageTooLargeError(f"decoding this photo needs more than {limits.cpu_s} s of CPU") from e
        raise BadImageError(f"the decoder failed on this file (exit status {code})") from e
    finally:
        here.close()
        if child.is_alive():
            child.kill()
        child.join(5.0)
        child.close()


class Decoder:
    """The server's photo decoding: at most ``concurrency`` children at once, run from threads."""

    def __init__(self, limits: DecodeLimits, concurrency: int) -> None:
        self.limits = limits
        self._slots = asyncio.Semaphore(concurrency)

    async def decode(self, upload: bytes) -> np.ndarray:
        async with self._slots:
            return await asyncio.get_running_loop().run_in_executor(None, decode_blocking, upload, self.limits)

    @staticmethod
    async def start() -> None:
        """Start the fork server now (a second or two), so the first upload does not wait for it."""
        def warm() -> None:
            ctx = _context()
            child = ctx.Process(target=harden_process, name="enliven-decode-warm", daemon=True)
            child.start()
            child.join(60)

        await asyncio.get_running_loop().run_in_executor(None, warm)
