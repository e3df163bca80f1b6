"""Server test harness (imported by the server tests as ``server_harness``).

The real server runs in its own OS process; clients (aiortc, HTTP, browser) run here.

Every server started here runs with test timeouts and /debug/state, and echoes frame ids so
clients can tell which webcam frame each output frame came from. When a server stops, its log
must hold no traceback and no asyncio task warnings.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from enliven.server.engines import log_id

T = TypeVar("T")

# Test timeouts (seconds): short, so reaping is seen quickly; generous enough for a busy CPU.
TEST_TIMEOUTS = ["--idle-timeout", "5", "--offer-timeout", "6", "--connect-timeout", "6", "--heartbeat-timeout", "5"]
# Rate limits and the per-client cap out of the way (every test client comes from 127.0.0.1).
NO_LIMITS = ["--create-rate", "6000", "--create-burst", "1000", "--offer-rate", "6000", "--offer-burst", "1000",
             "--max-sessions-per-client", "100"]
LOG_PROBLEMS = ("Traceback", "Task exception was never retrieved", "Task was destroyed but it is pending",
                "ERROR")
# S3: no photo in the log, raw or as base64 (PNG, JPEG, WebP starts), nor long base64 runs
PHOTO_IN_LOG = re.compile(rb"\x89PNG|\xff\xd8\xff|RIFF....WEBP|iVBORw0KGgo|/9j/|UklGR|[A-Za-z0-9+/]{200,}", re.S)
STARTUP_TIMEOUT_S = 120.0
POLL_INTERVAL_S = 0.2


def wait_until(predicate: Callable[[], T | None], timeout_s: float = 20.0, what: str = "condition") -> T:
    """Poll ``predicate()`` until it returns something true (returned); fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"never reached within {timeout_s:g} s: {what}")
        time.sleep(POLL_INTERVAL_S)


async def until(predicate: Callable[[], T | None], timeout_s: float = 20.0, what: str = "condition") -> T:
    """``wait_until`` inside a running event loop (the clients' tasks keep running while it waits)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"never reached within {timeout_s:g} s: {what}")
        await asyncio.sleep(POLL_INTERVAL_S)


@dataclass
class Server:
    url: str  # e.g. http://127.0.0.1:41234/
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base(self) -> str:
        return self.url.rstrip("/")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.base}/debug/state", timeout=10) as r:
            return json.loads(r.read())

    def wait_for(self, predicate: Any, timeout_s: float = 20.0, what: str = "condition") -> dict[str, Any]:
        """Poll /debug/state until ``predicate(state)`` holds; fail after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.state()
            if predicate(state):
                return state
            if time.monotonic() > deadline:
                pytest.fail(f"server never reached: {what}; last state {state}")
            time.sleep(POLL_INTERVAL_S)

    def wait_ended(self, session_id: str | None, timeout_s: float = 20.0) -> dict[str, Any]:
        """Wait until the session with this id is no longer live."""
        short = log_id(session_id or "")
        return self.wait_for(lambda s: all(p["id"] != short for p in s["per_session"]), timeout_s,
                             f"session {short} ended")

    def wait_idle(self, timeout_s: float = 20.0) -> dict[str, Any]:
        return self.wait_for(lambda s: s["sessions"] == s["reserved"] == s["ending"] == 0, timeout_s,
                             "no live session")


def start_server(log_path: Path, *args: str, echo_frame_ids: bool = True, cwd: Path | None = None) -> Server:
    env = dict(os.environ, GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "enliven.server", "--port", "0", "--debug-endpoints", *args]
    if echo_frame_ids:
        cmd.append("--echo-frame-ids")
    log = open(log_path, "wb")
    if cwd is not None:  # the checkout stays importable from another working directory
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    log.close()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        m = re.search(r"serving on (http://\S+)", log_path.read_text(errors="replace"))
        if m:
            return Server(m.group(1), proc, log_path)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"the server did not start:\n{log_path.read_text(errors='replace')[-3000:]}")


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
            pytest.fail("the server did not stop within 20 s of SIGTERM")
    log = server.log()
    problems = [line for line in log.splitlines() if any(p in line for p in LOG_PROBLEMS)]
    problems += [f"photo data in the log: {m.group(0)[:40]!r}" for m in PHOTO_IN_LOG.finditer(server.log_path.read_bytes())]
    assert not problems, "server log shows problems:\n" + "\n".join(problems[:20]) + "\n---\n" + log[-4000:]


def run(coro: Awaitable[T], timeout_s: float = 120.0) -> T:
    """Run a coroutine to completion in a fresh event loop, with an overall timeout."""
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout_s)

    return asyncio.run(bounded())


LABEL_TOLERANCE = 8.0  # grey levels: a VP8 round trip blurs the label's text a little (measured ~1.3)


def label_mismatch(image: np.ndarray) -> float:
    """How far the bottom-right corner of an animated frame ((S, S, 3) uint8) is from the "AI-generated"
    label the server burns in: the mean absolute difference, in grey levels, inside the label's box,
    against the label drawn by session_animator.stamp_disclosure itself (0 for a frame as made; a few
    levels after a VP8 round trip; ~100 without the label)."""
    from enliven.server.session_animator import stamp_disclosure

    reference = np.full_like(image, 128)
    stamp_disclosure(reference)
    ys, xs = np.nonzero(np.any(reference != 128, axis=2))
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    got = image[box].astype(np.float32).mean(axis=2)
    want = reference[box].astype(np.float32).mean(axis=2)
    return float(np.abs(got - want).mean())


def jpeg_bytes(image: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_y4m(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """A YUV4MPEG2 (4:2:0) clip of RGB frames, for Chromium's --use-file-for-fake-video-capture."""
    import cv2

    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2YUV_I420).tobytes())


async def valid_offer(audio: bool = False) -> str:
    """A real aiortc offer: one video track (and a microphone with ``audio``) plus the control data channel."""
    from aiortc import RTCPeerConnection

    from enliven.server.client import ClipTrack, ToneTrack, noise_frames

    pc = RTCPeerConnection()
    pc.createDataChannel("control")
    pc.addTrack(ClipTrack(noise_frames(64, 48, 1)))
    if audio:
        pc.addTrack(ToneTrack())
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp
