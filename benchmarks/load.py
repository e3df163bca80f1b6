"""Load benchmark: N concurrent loopback sessions against the real server, for a fixed time.

The server runs in its own process (``python -m enliven.server``, started with
``--echo-frame-ids``); this process holds the N aiortc clients. Each client sends the built-in
face clip (640x480, 30 fps by default) with a frame-number barcode and reads the number back from
the animated frames, so the latency is glass-to-glass on one clock: handed to the client's encoder
-> decoded by the client, through encode, network, the server's decode, animation and encode.
Recorded: per-session output fps, p50/p95/p99 latency, the server's CPU and memory over time
(psutil, every second), dropped frames and errors. The first WARMUP_S seconds are not counted.

``--upstream landmarks``: the clients send no video but the clip's face points, as a page that runs the
face landmarker itself does (MediaPipe in this process, computed once before the run; the points data
channel, points.py); the server draws each message's frame number into its output instead.

Run: ``python -m benchmarks.load --sessions 1 4 --seconds 60 --write`` (writes the load section
of benchmarks/RESULTS.md and benchmarks/results/load.json); with ``--upstream video landmarks`` the
comparison goes to its own section (load_upstream) and results/load_upstream.json. Reliability gates
(RELIABILITY.md): L1 is ``--sessions 3 --fps 15``, M2 ``--sessions 1 --seconds 120``, T7 ``--sessions 3
--busy-cores 1`` (a competing busy process per core named, for the whole run).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from enliven.fixtures import driving_frames
from enliven.server.client import LoopbackClient

from .machine import (
    RESULTS_DIR,
    machine_info,
    reference_line,
    reference_workload,
    write_results_json,
    write_results_section,
)
from .server_process import NO_CLIENT_LIMITS, start_server, stop_server

HERE = Path(__file__).resolve().parent
WARMUP_S = 5.0
TARGETS = {  # issues 3 and 12, on 2 CPU cores
    1: "1 session >= 25 fps at 256, p95 latency <= 150 ms",
    4: "4 sessions: no errors, no memory growth, latency bounded; with face points: >= 25 fps each, p95 <= 80 ms",
}


def _slope_per_min(times_s: list[float], values: list[float]) -> float:
    if len(times_s) < 3:
        return 0.0
    return float(np.polyfit(np.asarray(times_s), np.asarray(values), 1)[0] * 60.0)


def clip_points(clip: list[np.ndarray], fps: float) -> list[np.ndarray | None]:
    """The clip's face points as a page's landmarker measures them: MediaPipe, tracking mode, unsmoothed."""
    from enliven.engine.landmarks import LandmarkTracker

    with LandmarkTracker(smooth=False) as tracker:
        return [tracker.track(frame, i / fps) for i, frame in enumerate(clip)]


async def _run_sessions(url: str, n: int, seconds: float, fps: float, server: psutil.Process, upstream: str = "video"
                        ) -> tuple[list[LoopbackClient], list[dict[str, float]], list[str], float]:
    clip = driving_frames(640, 480, fps=fps)
    points = clip_points(clip, fps) if upstream == "landmarks" else None
    clients = [LoopbackClient(url, clip, fps=fps, points=points) for _ in range(n)]
    errors: list[str] = []
    samples: list[dict[str, float]] = []
    me = psutil.Process()
    tree: dict[int, psutil.Process] = {}  # the server and its inference workers, kept for cpu_percent deltas

    def sample_tree() -> tuple[float, float, float, float]:
        """CPU % (all of them), CPU % of the server process alone (aiortc, the data channels, the pipes to the
        workers, VP8 encoding), RSS of the server process, RSS of its workers (MB)."""
        for child in [server, *server.children(recursive=True)]:
            if child.pid not in tree:
                tree[child.pid] = child
                child.cpu_percent(None)
        cpu, main_cpu, main_rss, workers_rss = 0.0, 0.0, 0.0, 0.0
        for pid, p in list(tree.items()):
            try:
                pct = p.cpu_percent(None)
                rss = p.memory_info().rss / 2**20
            except psutil.NoSuchProcess:
                del tree[pid]
                continue
            cpu += pct
            if pid == server.pid:
                main_cpu, main_rss = pct, rss
            else:
                workers_rss += rss
        return cpu, main_cpu, main_rss, workers_rss

    sample_tree()
    me.cpu_percent(None)
    results = await asyncio.gather(*(c.connect() for c in clients), return_exceptions=True)
    errors += [f"connect: {r!r}" for r in results if isinstance(r, BaseException)]
    try:
        await asyncio.wait_for(asyncio.gather(*(c.first_frame.wait() for c in clients)), 60)
    except TimeoutError:
        errors.append("not every session received a first frame within 60 s")
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        await asyncio.sleep(1.0)
        cpu, main_cpu, main_rss, workers_rss = sample_tree()
        samples.append({"t_s": round(time.monotonic() - start, 2),
                        "server_cpu_pct": round(cpu, 1),
                        "server_main_cpu_pct": round(main_cpu, 1),
                        "server_rss_mb": round(main_rss, 1),
                        "workers_rss_mb": round(workers_rss, 1),
                        "server_threads": server.num_threads(),
                        "client_cpu_pct": me.cpu_percent(None)})
        errors += [f"session {i} ended early" for i, c in enumerate(clients) if c.ended.is_set()
                   and f"session {i} ended early" not in errors]
    return clients, samples, errors, start


async def _debug_state(url: str) -> dict[str, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(url.rstrip("/") + "/debug/state") as r:
            return await r.json()


def bench(sessions: int, seconds: float, fps: float, size: int, workers: int | None = None,
          engine: str = "trained", upstream: str = "video") -> dict[str, Any]:
    """Run ``sessions`` clients for ``seconds`` (after their first frame); return the figures."""
    log = Path(tempfile.mkdtemp(prefix="enliven-load-")) / "server.log"
    workers_args = () if workers is None else ("--workers", str(workers))
    proc, url = start_server(log, "--max-sessions", str(sessions), "--size", str(size), "--engine", engine,
                             *NO_CLIENT_LIMITS, *workers_args, timeout_s=120.0)
    load_before = os.getloadavg()
    try:
        server = psutil.Process(proc.pid)

        async def go() -> tuple[list[LoopbackClient], list[dict[str, float]], list[str], float, dict[str, Any]]:
            clients, samples, errors, start = await _run_sessions(url, sessions, seconds, fps, server, upstream)
            state = await _debug_state(url)
            await asyncio.gather(*(c.close() for c in clients))
            return clients, samples, errors, start, state

        clients, samples, errors, start, state = asyncio.run(go())
    finally:
        stop_server(proc, timeout_s=20.0)
    text = log.read_text(errors="replace")
    errors += [line for line in text.splitlines() if "Traceback" in line or " ERROR " in line][:10]
    errors += [f"server errors in session {s['id']}: {s['errors']}" for s in state.get("per_session", [])
               if s["errors"]]
    t0 = start + WARMUP_S
    per_session = []
    for c in clients:
        lat = c.latencies_ms(since_s=t0)
        got = [r for r in c.result.received if r.t_s >= t0]
        sent = sum(1 for t in c.track.sent_s.values() if t >= t0)
        per_session.append({
            "fps": round(c.fps(since_s=t0), 1),
            "frames": len(got),
            "latency_p50_ms": round(float(np.percentile(lat, 50)), 1) if lat else None,
            "latency_p95_ms": round(float(np.percentile(lat, 95)), 1) if lat else None,
            "latency_p99_ms": round(float(np.percentile(lat, 99)), 1) if lat else None,
            "latency_first_half_p95_ms": _half_p95(c, t0, start + seconds, first=True),
            "latency_second_half_p95_ms": _half_p95(c, t0, start + seconds, first=False),
            "sizes": sorted({(r.width, r.height) for r in got}),
            "input_fps": fps,
            "input_fps_sent": round(sent / max(1e-6, seconds - WARMUP_S), 1),
            "sent_after_warmup": sent,
        })
    counted = [s for s in samples if s["t_s"] >= WARMUP_S]
    all_lat = [x for c in clients for x in c.latencies_ms(since_s=t0)]
    return {
        "sessions": sessions, "engine": engine, "upstream": upstream, "workers": "threads" if workers == 0 else (workers or "one per core"),
        "seconds": seconds, "input_fps": fps, "crop_size_px": size, "warmup_s": WARMUP_S,
        "load_average_before": [round(x, 2) for x in load_before],
        "per_session": per_session,
        "fps_min": min((s["fps"] for s in per_session), default=0.0),
        "input_fps_sent_mean": round(float(np.mean([s["input_fps_sent"] for s in per_session])), 1)
        if per_session else 0.0,
        "fps_mean": round(float(np.mean([s["fps"] for s in per_session])), 1) if per_session else 0.0,
        "latency_p50_ms": round(float(np.percentile(all_lat, 50)), 1) if all_lat else None,
        "latency_p95_ms": round(float(np.percentile(all_lat, 95)), 1) if all_lat else None,
        "latency_p99_ms": round(float(np.percentile(all_lat, 99)), 1) if all_lat else None,
        "server_cpu_pct_mean": round(float(np.mean([s["server_cpu_pct"] for s in counted])), 1) if counted else None,
        "server_main_cpu_pct_mean": round(float(np.mean([s["server_main_cpu_pct"] for s in counted])), 1)
        if counted else None,
        "client_cpu_pct_mean": round(float(np.mean([s["client_cpu_pct"] for s in counted])), 1) if counted else None,
        **memory_summary(samples, seconds),
        "server_dropped_frames": {"in": sum(s["dropped_in"] + ((s.get("points") or {}).get("replaced", 0))
                                            for s in state.get("per_session", [])),
                                  "out": sum(s["dropped_out"] for s in state.get("per_session", []))},
        "server_frames_in": sum(s["frames_in"] for s in state.get("per_session", [])),
        "errors": errors,
        "samples": samples,
    }


def memory_summary(samples: list[dict[str, float]], seconds: float) -> dict[str, float | None]:
    """RSS of the server and its workers: at the end of the warm-up, at the end, and its slope over the
    second half of the run (the first half holds the allocators' and codecs' warm-up)."""
    counted = [s for s in samples if s["t_s"] >= WARMUP_S]
    rss = [round(s["server_rss_mb"] + s.get("workers_rss_mb", 0.0), 1) for s in counted]
    half = [s for s in counted if s["t_s"] >= max(WARMUP_S, seconds / 2)]
    slope = _slope_per_min([s["t_s"] for s in half], [s["server_rss_mb"] + s.get("workers_rss_mb", 0.0) for s in half])
    return {"server_rss_mb_start": rss[0] if rss else None, "server_rss_mb_end": rss[-1] if rss else None,
            "server_rss_slope_mb_per_min": round(slope, 2)}


def _half_p95(c: LoopbackClient, t0: float, t1: float, first: bool) -> float | None:
    mid = (t0 + t1) / 2
    lat = [r.latency_ms for r in c.result.received if r.latency_ms is not None
           and ((t0 <= r.t_s < mid) if first else (r.t_s >= mid))]
    return round(float(np.percentile(lat, 95)), 1) if lat else None


def verdict(r: dict[str, Any]) -> str:
    """The issue's targets, checked (1 and 4 sessions; others: errors only)."""
    problems = []
    if r["errors"]:
        problems.append(f"{len(r['errors'])} errors")
    if r["sessions"] == 4 and r.get("upstream") == "landmarks":
        if r["fps_min"] < 25:
            problems.append(f"fps {r['fps_min']} < 25")
        if r["latency_p95_ms"] is None or r["latency_p95_ms"] > 80:
            problems.append(f"p95 {r['latency_p95_ms']} ms > 80")
    if r["sessions"] == 1:
        if r["fps_min"] < 25:
            problems.append(f"fps {r['fps_min']} < 25")
        if r["latency_p95_ms"] is None or r["latency_p95_ms"] > 150:
            problems.append(f"p95 {r['latency_p95_ms']} ms > 150")
    if r["server_rss_slope_mb_per_min"] > 1.0:
        problems.append(f"RSS grows {r['server_rss_slope_mb_per_min']} MB/min in the second half")
    return "met" if not problems else "not met: " + "; ".join(problems)


def _workers_label(r: dict[str, Any]) -> str:
    w = r["workers"]
    return "threads in the server" if w == "threads" else f"{w} worker process(es)" if isinstance(w, int) \
        else "worker processes, one per core"


def markdown_table(results: list[dict[str, Any]]) -> str:
    lines = ["| engine | upstream | sessions | inference | webcam fps sent (mean) "
             "| output fps per session (min / mean) "
             "| latency p50 / p95 / p99 ms | server CPU % "
             "| client CPU % | server + workers RSS start -> end MB (slope in the 2nd half, MB/min) "
             "| frames dropped by the server (in / out) "
             "| errors | target |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        dropped = r["server_dropped_frames"]
        lines.append(
            f"| {r.get('engine', 'analytic')} | {r.get('upstream', 'video')} | {r['sessions']} | {_workers_label(r)} "
            f"| {r.get('input_fps_sent_mean', r['input_fps'])} "
            f"| {r['fps_min']} / {r['fps_mean']} "
            f"| {r['latency_p50_ms']} / {r['latency_p95_ms']} / "
            f"{r['latency_p99_ms']} | {r['server_cpu_pct_mean']} | {r['client_cpu_pct_mean']} | "
            f"{r['server_rss_mb_start']} -> {r['server_rss_mb_end']} ({r['server_rss_slope_mb_per_min']:+}) | "
            f"{dropped['in']} / {dropped['out']} of {r['server_frames_in']} | {len(r['errors'])} | {verdict(r)} |")
    return "\n".join(lines)


def _record_name(upstreams: tuple[str, ...] | list[str]) -> str:
    """The RESULTS.md section and results/*.json of a run: "load" for video only, else "load_upstream"."""
    return "load" if tuple(upstreams) == ("video",) else "load_upstream"


def _write_results_md(record: dict[str, Any], table: str) -> None:
    """Replace the run's section of benchmarks/RESULTS.md (_record_name), keeping the other sections."""
    m = record["machine"]
    first = record["results"][0]
    loads = ", ".join(f"{r['sessions']}: {r['load_average_before'][0]}" for r in record["results"])
    name = _record_name([r.get("upstream", "video") for r in record["results"]])
    title = ("## Concurrent sessions over WebRTC on loopback (`python -m benchmarks.load`)" if name == "load" else
             "## Face points instead of camera video, on loopback (`python -m benchmarks.load --upstream video "
             "landmarks`)")
    section = [
        title,
        "",
        f"Recorded {record['date']} from {record.get('source', 'unknown')} on {m['cpu']}, {m['cores']} cores, "
        f"Python {m['python']}; "
        f"versions {json.dumps(m['versions'])}.",
        f"The server (its own process, engine as the table says, "
        f"{first['crop_size_px']}x{first['crop_size_px']} output, "
        "inference in worker processes or in threads, as the table says) against N aiortc clients in a second "
        "process, each sending the built-in "
        f"face clip at 640x480, up to {first['input_fps']:g} fps (VP8; like the page, a client sends fewer frames "
        "when the server hints that it cannot animate them all: 'webcam fps sent'), or, with upstream "
        "'landmarks', no video but the clip's MediaPipe face points (2888-byte messages on a data channel, as "
        "a page running the landmarker sends them; the client's MediaPipe runs before the run, not during it), "
        f"for {first['seconds']:g} s after the first frame; "
        f"the first {WARMUP_S:g} s are not counted. Latency is glass-to-glass: a frame number stamped into each "
        "webcam frame (or points message), copied or drawn into the animated frame by the server "
        "(--echo-frame-ids), read back by the client (client encode + network + server decode, animation, "
        "encode + client decode, one clock; with face points the page's own landmarker time, ~10-25 ms, is not "
        "included). "
        "CPU % is of one core (200 % = both cores); the server's includes its inference workers. "
        f"1-minute load average before each run (other work on the machine): {loads}."
        + (" Machine reference (`benchmarks.machine.reference_workload`, ms, median, timed before the runs): "
           + ", ".join(f"{k} {v:g}" for k, v in record["reference_ms"].items()) + "."
           if record.get("reference_ms") else ""),
        *([f"Note: {record['note']}", ""] if record.get("note") else []),
        table,
        "",
    ]
    write_results_section(name, section)


def _busy(cores: int) -> list[subprocess.Popen[bytes]]:
    """``cores`` processes that spin (T7: the machine's CPU taken by someone else)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]


def run(sessions: tuple[int, ...] = (1, 4), seconds: float = 60.0, fps: float = 30.0, size: int = 256,
        write: bool = False, workers: tuple[int | None, ...] = (None,),
        engines: tuple[str, ...] = ("trained",), busy_cores: int = 0, upstreams: tuple[str, ...] = ("video",),
        note: str = "") -> list[dict[str, Any]]:
    busy = _busy(busy_cores)
    try:
        return _run(sessions, seconds, fps, size, write, workers, engines, busy_cores, upstreams, note)
    finally:
        for b in busy:
            b.kill()
            b.wait()


def _run(sessions: tuple[int, ...], seconds: float, fps: float, size: int, write: bool,
         workers: tuple[int | None, ...], engines: tuple[str, ...], busy_cores: int,
         upstreams: tuple[str, ...] = ("video",), note: str = "") -> list[dict[str, Any]]:
    reference = reference_workload()  # fixed single-thread kernels: compares machines and busy runs
    print(reference_line(reference), flush=True)
    results = []
    for upstream in upstreams:
        for engine in engines:
            for w in workers:
                for n in sessions:
                    print(f"load: {engine}, {upstream}, {n} session(s), workers "
                          f"{w if w is not None else 'default'}, {seconds:g} s...", flush=True)
                    results.append({**bench(n, seconds, fps, size, w, engine, upstream), "busy_cores": busy_cores})
    table = markdown_table(results)
    print(table)
    for r in results:
        for e in r["errors"][:5]:
            print(f"  {r['sessions']} sessions: {e}")
    if write:
        name = _record_name(upstreams)
        record = {"benchmark": name, "date": datetime.now(UTC).isoformat(timespec="seconds"),
                  "machine": machine_info(), "reference_ms": reference, "source": _source_state(), "note": note,
                  "results": results}
        write_results_json(name, record)
        _write_results_md(record, table)
    return results


def _source_state() -> str:
    """The commit the code was run from, and whether the work tree differed from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' + uncommitted changes' if dirty else ''}" if head else "unknown"


def rewrite(name: str = "load") -> None:
    """Recompute the summary figures of the recorded run from its samples; rewrite JSON and Markdown."""
    record = json.loads((RESULTS_DIR / f"{name}.json").read_text())
    for r in record["results"]:
        r.update(memory_summary(r["samples"], r["seconds"]))
    write_results_json(name, record)
    table = markdown_table(record["results"])
    print(table)
    _write_results_md(record, table)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.split("\n")[0])
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 4], help="concurrent sessions per run")
    p.add_argument("--seconds", type=float, default=60.0, help="measured time per run (after the first frame)")
    p.add_argument("--fps", type=float, default=30.0, help="webcam frames per second each client sends")
    p.add_argument("--size", type=int, choices=(256, 512), default=256, help="output size")
    p.add_argument("--workers", type=int, nargs="+", default=None,
                   help="inference worker processes per run (0 = threads in the server); default: the server's")
    p.add_argument("--engine", nargs="+", choices=("trained", "analytic"), default=["trained"],
                   help="generator of the sessions (default trained, the server's default)")
    p.add_argument("--upstream", nargs="+", choices=("video", "landmarks"), default=["video"],
                   help="what the clients send: camera video (default) or face points, as the page's landmarker does")
    p.add_argument("--busy-cores", type=int, default=0, metavar="N",
                   help="N competing processes spinning meanwhile (gate T7: CPU overload)")
    p.add_argument("--write", action="store_true", help="write benchmarks/RESULTS.md and results/load.json")
    p.add_argument("--note", default="", help="a sentence recorded with the results (e.g. what else ran)")
    p.add_argument("--rewrite", action="store_true",
                   help="recompute the summaries of results/load.json (no new run) and rewrite both files")
    a = p.parse_args(argv)
    if a.rewrite:
        rewrite(_record_name(tuple(a.upstream)))
        return 0
    run(tuple(a.sessions), a.seconds, a.fps, a.size, a.write, tuple(a.workers) if a.workers else (None,),
        tuple(a.engine), a.busy_cores, tuple(a.upstream), a.note)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GLOG_minloglevel", "2")
    sys.exit(main())
