"""Timing and memory figures of the reliability plan's gates (RELIABILITY.md), measured against the real server.

The tests (tests/server/) check that each gate's behaviour holds, with generous ceilings; the figures
live here, measured on the machine at hand and recorded (JSON + a Markdown table in RESULTS.md):

    L2  answer to a session over capacity (503)                 ceiling: 1 s
    L3  offer -> first animated frame, 10 sequential sessions     p95 2 s
    P1  answer to a malformed offer (400), the slowest of a corpus 1 s
    U1  answer to a 50 MB upload, and to a chunked one (413)     1 s
    U2  answer to upload bombs (422)                             3 s
    --  a stalled upload's answer (408, after the body timeout)
    --  GET /photo: first (encoded) and later (cached) answers
    B2  a 2 s generator stall: time to the first fresh frame       300 ms (id age 200 ms)
    M1  40 connect/stream/close cycles: RSS growth after cycle 10   15 MB; threads, fds, tasks back to baseline
    M3  tracemalloc around M1: largest growth of one allocation site 1 MB (server run with ENLIVEN_TRACEMALLOC=1)

Run: ``python -m benchmarks.gates [--cycles 40] [--write]`` (a few minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psutil

from enliven.server.client import LoopbackClient, noise_frames

from .machine import RESULTS_DIR, machine_info, write_results_json, write_results_section
from .server_process import NO_CLIENT_LIMITS, start_server, stop_server

HERE = Path(__file__).resolve().parent
MiB = 2**20
BODY_TIMEOUT_S = 3.0
GATES_ARGS = (*NO_CLIENT_LIMITS, "--body-timeout", str(BODY_TIMEOUT_S))


async def _timed(coro: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = await coro
    return out, (time.perf_counter() - t0) * 1e3


async def _post(http: aiohttp.ClientSession, url: str, **kw: Any) -> int:
    try:
        async with http.post(url, **kw) as r:
            await r.read()
            return r.status
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
        return -1


async def _requests(base: str) -> dict[str, Any]:
    """L2, P1, U1, U2, the stalled upload and the photo's preview."""
    sys.path.insert(0, str(HERE.parent / "tests" / "server"))
    from test_server_bad_input import _jpeg_claiming, _png_bomb, _sdp_corpus, _valid_offer  # noqa: E402
    from test_server_hostile import _rgba16_png, _stalled_upload  # noqa: E402

    from enliven.engine.defaults import builtin_photo
    from enliven.engine.image_io import encode_jpeg

    out: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        # L2: fill the server (2 sessions), then one more
        made = []
        for _ in range(2):
            async with http.post(f"{base}/api/sessions") as r:
                made.append(await r.json())
        status, ms = await _timed(_post(http, f"{base}/api/sessions"))
        out["L2_503_ms"] = round(ms, 1) if status == 503 else f"got {status}"
        # P1: each malformed offer of the test corpus, on the first session
        first = made[0]
        valid, with_audio = await _valid_offer(), await _valid_offer(audio=True)
        worst = 0.0
        for name, body in _sdp_corpus(valid, with_audio):
            status, ms = await _timed(_post(http, f"{base}/api/sessions/{first['session_id']}/offer", data=body,
                                            headers={"Authorization": f"Bearer {first['token']}"}))
            worst = max(worst, ms)
        out["P1_400_worst_ms"] = round(worst, 1)
        for m in made:
            async with http.delete(f"{base}/api/sessions/{m['session_id']}",
                                   headers={"Authorization": f"Bearer {m['token']}"}):
                pass
        # U1: 50 MB with a Content-Length, and 12 MB chunked
        big = aiohttp.FormData()
        big.add_field("consent", "true")
        big.add_field("photo", bytes(50 * MiB), filename="p.jpg", content_type="image/jpeg")
        status, ms = await _timed(_post(http, f"{base}/api/sessions", data=big))
        out["U1_413_50MB_ms"] = round(ms, 1) if status in (413, -1) else f"got {status}"

        async def chunks() -> Any:
            yield b"--b\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"p.jpg\"\r\n\r\n"
            for _ in range(12 * 16):
                yield bytes(64 * 1024)

        status, ms = await _timed(_post(http, f"{base}/api/sessions", data=chunks(),
                                        headers={"Content-Type": "multipart/form-data; boundary=b"}))
        out["U1_413_chunked_ms"] = round(ms, 1) if status in (413, -1) else f"got {status}"
        # U2: bombs
        good = encode_jpeg(builtin_photo())
        for name, data in [("png_bomb", _png_bomb()), ("jpeg_30000", _jpeg_claiming(30000, good)),
                           ("rgba16_16MP", _rgba16_png(4000))]:
            form = aiohttp.FormData()
            form.add_field("consent", "true")
            form.add_field("photo", data, filename="p.png", content_type="application/octet-stream")
            status, ms = await _timed(_post(http, f"{base}/api/sessions", data=form))
            out[f"U2_{name}_ms"] = round(ms, 1) if status == 422 else f"got {status}"
        # a stalled upload
        t0 = time.perf_counter()
        status = await _stalled_upload(base, "203.0.113.1", trickle=False)
        out["stalled_upload_408_ms"] = round((time.perf_counter() - t0) * 1e3, 1) if status == 408 else f"got {status}"
        out["body_timeout_s"] = BODY_TIMEOUT_S
        # the photo's preview: first (decoded photo -> PNG) and cached
        form = aiohttp.FormData()
        form.add_field("consent", "true")
        form.add_field("photo", encode_jpeg(np.kron(builtin_photo(), np.ones((8, 8, 1), np.uint8))),
                       filename="p.jpg", content_type="image/jpeg")  # 4096 px: 16.8 MP
        async with http.post(f"{base}/api/sessions", data=form) as r:
            made = await r.json()
        auth = {"Authorization": f"Bearer {made['token']}"}
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            async with http.get(f"{base}/api/sessions/{made['session_id']}/photo", headers=auth) as r:
                await r.read()
            times.append((time.perf_counter() - t0) * 1e3)
        out["photo_first_ms"], out["photo_cached_ms"] = round(times[0], 1), round(float(np.median(times[1:])), 1)
        async with http.delete(f"{base}/api/sessions/{made['session_id']}", headers=auth):
            pass
    return out


async def _setup_times(base: str, n: int = 10) -> dict[str, Any]:
    """L3: offer posted -> first animated frame, sequential sessions."""
    frames = noise_frames()
    times = []
    for _ in range(n):
        c = LoopbackClient(base, frames, fps=15)
        try:
            await c.create()
            t0 = time.monotonic()
            await c.connect()
            await asyncio.wait_for(c.first_frame.wait(), 60)
            times.append((time.monotonic() - t0) * 1e3)
        finally:
            await c.close()
        await asyncio.sleep(0.5)
    return {"L3_setup_p50_ms": round(float(np.percentile(times, 50)), 1),
            "L3_setup_p95_ms": round(float(np.percentile(times, 95)), 1)}


async def _stall(base: str) -> dict[str, Any]:
    """B2: the session's worker stopped for 2 s; the first fresh frame after it, and its id age."""
    c = LoopbackClient(base, noise_frames(), fps=15, follow_hints=False)
    try:
        await c.connect()
        await asyncio.wait_for(c.first_frame.wait(), 60)
        await asyncio.sleep(1.0)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/debug/state") as r:
                state = await r.json()
        pid = next(w["pid"] for w in state["workers"] if w["sessions"] > 0)
        os.kill(pid, signal.SIGSTOP)
        await asyncio.sleep(2.0)
        os.kill(pid, signal.SIGCONT)
        resumed = time.monotonic()
        await asyncio.sleep(2.0)
        fresh = [r for r in c.result.received if r.t_s > resumed and r.latency_ms is not None and r.latency_ms < 1000]
        stale = [r for r in c.result.received if r.t_s > resumed and r.latency_ms is not None and r.latency_ms >= 1000]
        if not fresh:
            return {"B2_first_fresh_ms": "none"}
        return {"B2_first_fresh_ms": round((fresh[0].t_s - resumed) * 1e3, 1),
                "B2_first_fresh_id_age_ms": round(fresh[0].latency_ms or 0.0, 1), "B2_stale_frames": len(stale)}
    finally:
        await c.close()


async def _churn(base: str, proc: psutil.Process, cycles: int) -> dict[str, Any]:
    """M1 + M3: connect, stream 1 s, close; RSS, threads, fds and tasks after each cycle; tracemalloc sites."""
    frames = noise_frames()
    rows = []
    tops: dict[int, dict[str, float]] = {}
    async with aiohttp.ClientSession() as http:
        for i in range(cycles):
            c = LoopbackClient(base, frames, fps=15)
            try:
                await c.connect()
                await asyncio.wait_for(c.first_frame.wait(), 60)
                await asyncio.sleep(1.0)
            finally:
                await c.close()
            for _ in range(100):
                async with http.get(f"{base}/debug/state") as r:
                    state = await r.json()
                if state["sessions"] == state["ending"] == 0:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            rows.append({"rss_mb": proc.memory_info().rss / MiB, "threads": proc.num_threads(), "fds": proc.num_fds(),
                         "tasks": state["asyncio_tasks"]})
            if "tracemalloc_top" in state and i in (9, cycles - 1):
                tops[i] = {t["site"]: t["kib"] for t in state["tracemalloc_top"]}
    base_row, last = rows[min(9, len(rows) - 1)], rows[-1]
    out: dict[str, Any] = {
        "M1_cycles": cycles, "M1_rss_growth_mb_after_10": round(last["rss_mb"] - base_row["rss_mb"], 1),
        "M1_threads": f"{base_row['threads']} -> {last['threads']}", "M1_fds": f"{base_row['fds']} -> {last['fds']}",
        "M1_tasks": f"{base_row['tasks']} -> {last['tasks']}",
    }
    if len(tops) == 2:
        a, b = tops[9], tops[cycles - 1]
        growth = sorted(((b[k] - a.get(k, 0.0), k) for k in b), reverse=True)[:3]
        out["M3_largest_site_growth_kib"] = round(growth[0][0], 1) if growth else 0.0
        out["M3_top_sites"] = [f"{k}: +{g:.0f} KiB" for g, k in growth]
    return out


GATES = [  # (key, gate, ceiling as text)
    ("L2_503_ms", "L2 503 over capacity", "<= 1000 ms"),
    ("L3_setup_p95_ms", "L3 offer -> first frame, p95", "<= 2000 ms"),
    ("P1_400_worst_ms", "P1 400 to a malformed offer, slowest", "<= 1000 ms"),
    ("U1_413_50MB_ms", "U1 413 to 50 MB", "<= 1000 ms"),
    ("U1_413_chunked_ms", "U1 413 to 12 MB chunked", "<= 1000 ms"),
    ("U2_png_bomb_ms", "U2 422 to a PNG bomb", "<= 3000 ms"),
    ("U2_jpeg_30000_ms", "U2 422 to a 30000x30000 JPEG header", "<= 3000 ms"),
    ("U2_rgba16_16MP_ms", "U2 422 to a 16 MP 16-bit RGBA PNG (decoded in the child, no face)", "<= 3000 ms"),
    ("stalled_upload_408_ms", "stalled upload answered (body timeout 3 s)", "body timeout + 1 s"),
    ("photo_first_ms", "GET /photo, first (16.8 MP photo)", "-"),
    ("photo_cached_ms", "GET /photo, cached", "-"),
    ("B2_first_fresh_ms", "B2 first fresh frame after a 2 s stall", "<= 300 ms"),
    ("B2_first_fresh_id_age_ms", "B2 its id age", "<= 200 ms"),
    ("M1_rss_growth_mb_after_10", "M1 RSS growth, cycles 10 -> last", "<= 15 MB"),
    ("M1_threads", "M1 threads, cycle 10 -> last", "equal"),
    ("M1_fds", "M1 fds, cycle 10 -> last", "equal"),
    ("M1_tasks", "M1 asyncio tasks, cycle 10 -> last", "equal"),
    ("M3_largest_site_growth_kib", "M3 largest growth of one allocation site", "<= 1024 KiB"),
]


UNITS = (("_ms", " ms"), ("_mb_after_10", " MB"), ("_kib", " KiB"))


def markdown(figures: dict[str, Any]) -> list[str]:
    lines = ["| gate | measured | plan's figure |", "|---|---|---|"]
    for key, name, ceiling in GATES:
        if key in figures:
            value = figures[key]
            unit = next((u for suffix, u in UNITS if key.endswith(suffix) and isinstance(value, float)), "")
            lines.append(f"| {name} | {value}{unit} | {ceiling} |")
    return lines


def _write(record: dict[str, Any]) -> None:
    figures, m = record["figures"], record["machine"]
    write_results_json("gates", record)
    write_results_section("gates", [
        "## Reliability gates: timings and memory (`python -m benchmarks.gates`)", "",
        f"{record['date']}, {m['cpu']} ({m['cores']} cores), load average before "
        f"{figures['load_average_before']} (the machine is shared: times include waiting for a core). "
        "The tests check each gate's behaviour; these are its figures. The churn server traces its "
        "allocations (tracemalloc) for M1/M3. The 16 MP RGBA upload is a valid photo (no face): its time is "
        "its decoding in the capped child plus the face search.", "", *markdown(figures), ""])


def run(cycles: int, write: bool) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="enliven-gates-"))
    figures: dict[str, Any] = {"load_average_before": [round(x, 2) for x in os.getloadavg()]}
    proc, base = start_server(tmp / "server.log", *GATES_ARGS, "--max-sessions", "2")
    try:
        figures.update(asyncio.run(_requests(base)))
        figures.update(asyncio.run(_setup_times(base)))
        figures.update(asyncio.run(_stall(base)))
    finally:
        stop_server(proc, timeout_s=30.0)
    proc, base = start_server(tmp / "churn.log", *GATES_ARGS, "--max-sessions", "2",
                              env_extra={"ENLIVEN_TRACEMALLOC": "1"})
    try:
        figures.update(asyncio.run(_churn(base, psutil.Process(proc.pid), cycles)))
    finally:
        stop_server(proc, timeout_s=30.0)
    lines = markdown(figures)
    print("\n".join(lines))
    if write:
        _write({"benchmark": "gates", "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": machine_info(), "figures": figures})
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gates", description=__doc__.split("\n")[0])
    p.add_argument("--cycles", type=int, default=40, help="connect/stream/close cycles of M1 (default 40)")
    p.add_argument("--write", action="store_true", help="write benchmarks/RESULTS.md and results/gates.json")
    p.add_argument("--rewrite", action="store_true", help="rewrite RESULTS.md from results/gates.json (no run)")
    a = p.parse_args(argv)
    if a.rewrite:
        _write(json.loads((RESULTS_DIR / "gates.json").read_text()))
        return 0
    run(a.cycles, a.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
