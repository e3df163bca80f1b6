"""Faults: a generator slower than the webcam (newest frame wins), and an inference worker that dies."""
from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from server_harness import Server, run, start_server, stop_server, until

from enliven.server.client import LoopbackClient

pytestmark = pytest.mark.slow


def test_slow_generator_drops_frames_instead_of_queueing(tmp_path: Path, clip: list[np.ndarray]) -> None:
    """100 ms per frame against a 25 fps webcam: queues stay at most one frame, latency does not grow."""
    slow = start_server(tmp_path / "slow.log", "--max-sessions", "1", "--debug-step-delay-ms", "100")
    c = LoopbackClient(slow.url, clip, fps=25, follow_hints=False)  # keep sending 25 fps: frames must drop
    depths: list[tuple[int, int]] = []

    async def go() -> dict:
        import aiohttp

        try:
            await c.connect()
            await asyncio.wait_for(c.first_frame.wait(), 60)
            async with aiohttp.ClientSession() as http:
                t_end = time.monotonic() + 8.0
                while time.monotonic() < t_end:
                    async with http.get(f"{slow.base}/debug/state") as r:
                        state = await r.json()
                    for s in state["per_session"]:
                        depths.append((s["inbox_depth"], s["remote_queue"] or 0))
                    await asyncio.sleep(0.2)
            return state
        finally:
            await c.close()

    try:
        state = run(go())
    finally:
        stop_server(slow)
    assert depths and max(d for d, _ in depths) <= 1, "the slot between decoder and generator holds one frame"
    assert max(q for _, q in depths) <= 2, "aiortc's queue behind the webcam track is drained continuously"
    s = state["per_session"][0]
    assert s["dropped_in"] >= 0.4 * s["frames_in"], f"stale frames must be dropped: {s}"
    got = [r for r in c.result.received if r.latency_ms is not None]
    t0 = got[0].t_s
    early = [r.latency_ms for r in got if t0 + 1 <= r.t_s < t0 + 3]
    late = [r.latency_ms for r in got if r.t_s >= got[-1].t_s - 2]
    assert early and late
    assert np.median(late) <= 2 * np.median(early) + 200, (
        f"latency grew: {np.median(early):.0f} ms -> {np.median(late):.0f} ms (frames must not queue)")
    assert max(late) < 2000


def test_a_dead_worker_ends_its_sessions_and_is_replaced(server: Server, clip: list[np.ndarray]) -> None:
    server.wait_idle()
    if "workers" not in server.state():
        pytest.skip("the server runs inference in threads")
    c = LoopbackClient(server.url, clip, fps=20)

    async def go() -> None:
        try:
            await c.connect()
            await asyncio.wait_for(c.first_frame.wait(), 60)
            state = await asyncio.to_thread(server.state)
            pid = next(w["pid"] for w in state["workers"] if w["sessions"] > 0)
            os.kill(pid, signal.SIGKILL)
            await asyncio.wait_for(c.ended.wait(), 30)
        finally:
            await c.close()

    run(go())
    state = server.wait_idle()
    assert state["end_reasons"].get("inference worker failed", 0) >= 1
    fresh = LoopbackClient(server.url, clip, fps=20)

    async def again() -> int:
        try:
            await fresh.connect()
            await asyncio.wait_for(fresh.first_frame.wait(), 90)
            await until(lambda: len(fresh.result.received) > 5, 30, "frames from the replaced worker")
            return len(fresh.result.received)
        finally:
            await fresh.close()

    assert run(again()) > 5, "a new session works once the worker is replaced"
    state = server.wait_idle()
    assert all(w["alive"] for w in state["workers"])
