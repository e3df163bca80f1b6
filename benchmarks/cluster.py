"""What the Ray path costs: the same loopback sessions against ``enliven serve`` and ``enliven serve --cluster ray``.

Both servers run on this machine. Without a cluster the server holds the peer connections and its
inference worker processes (one per core) the Animators. With ``--cluster ray`` the front door starts a
private Ray (GCS, raylet, its helpers) and every session is an actor process that holds its own peer
connection and Animator. The clients are benchmarks/load.py's (640x480 webcam clip with frame numbers,
glass-to-glass latency on one clock). Recorded per mode and session count: output fps, latency, the CPU
and memory of the whole process tree (server and workers, or front door, Ray's daemons and actors), and
the time from POST /api/sessions to the first animated frame (an actor process starts per session).

Run: ``python -m benchmarks.cluster --sessions 1 4 --seconds 30 --write`` (writes the cluster section of
benchmarks/RESULTS.md and benchmarks/results/cluster.json). Needs the cluster extra (Ray).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from .load import WARMUP_S, _debug_state, _run_sessions, _source_state, memory_summary
from .machine import machine_info, write_results_json, write_results_section
from .server_process import NO_CLIENT_LIMITS, start_server, stop_server

MODES = {"single": [], "ray": ["--cluster", "ray"]}  # extra `enliven serve` arguments of each mode


def bench(mode: str, sessions: int, seconds: float, fps: float, engine: str) -> dict[str, Any]:
    """``sessions`` clients for ``seconds`` (after their first frame) against a server in ``mode``."""
    log = Path(tempfile.mkdtemp(prefix=f"enliven-cluster-{mode}-")) / "server.log"
    proc, url = start_server(log, "--max-sessions", str(sessions), "--engine", engine, *NO_CLIENT_LIMITS, *MODES[mode])
    load_before = os.getloadavg()
    try:
        server = psutil.Process(proc.pid)

        async def go() -> tuple[Any, ...]:
            t_connect = time.monotonic()
            clients, samples, errors, start = await _run_sessions(url, sessions, seconds, fps, server)
            state = await _debug_state(url)
            await asyncio.gather(*(c.close() for c in clients))
            return clients, samples, errors, start, state, t_connect

        clients, samples, errors, start, state, t_connect = asyncio.run(go())
    finally:
        stop_server(proc)
    text = log.read_text(errors="replace")
    errors += [line for line in text.splitlines() if "Traceback" in line or " ERROR " in line][:10]
    t0 = start + WARMUP_S
    lat = [x for c in clients for x in c.latencies_ms(since_s=t0)]
    fps_out = [c.fps(since_s=t0) for c in clients]
    first = [c.result.received[0].t_s - t_connect for c in clients if c.result.received]
    counted = [s for s in samples if s["t_s"] >= WARMUP_S]
    cluster = state.get("cluster", {})
    return {
        "mode": mode, "sessions": sessions, "engine": engine, "seconds": seconds, "input_fps": fps,
        "warmup_s": WARMUP_S, "load_average_before": [round(x, 2) for x in load_before],
        "fps_min": round(min(fps_out), 1) if fps_out else 0.0,
        "fps_mean": round(float(np.mean(fps_out)), 1) if fps_out else 0.0,
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 1) if lat else None,
        "latency_p95_ms": round(float(np.percentile(lat, 95)), 1) if lat else None,
        "first_frame_s_max": round(max(first), 2) if first else None,
        "cpu_pct_mean": round(float(np.mean([s["server_cpu_pct"] for s in counted])), 1) if counted else None,
        "client_cpu_pct_mean": round(float(np.mean([s["client_cpu_pct"] for s in counted])), 1) if counted else None,
        **memory_summary(samples, seconds),
        "nodes": len(cluster.get("nodes", [])) or None,
        "errors": errors,
        "samples": samples,
    }


def markdown_table(results: list[dict[str, Any]]) -> str:
    lines = ["| path | sessions | output fps per session (min / mean) | latency p50 / p95 ms | CPU % (whole tree) "
             "| client CPU % | RSS of the tree at the end MB | POST -> first frame, slowest session s | errors |",
             "|---|---|---|---|---|---|---|---|---|"]
    label = {"single": "single machine (worker processes)", "ray": "--cluster ray (an actor per session)"}
    for r in results:
        lines.append(f"| {label[r['mode']]} | {r['sessions']} | {r['fps_min']} / {r['fps_mean']} "
                     f"| {r['latency_p50_ms']} / {r['latency_p95_ms']} | {r['cpu_pct_mean']} "
                     f"| {r['client_cpu_pct_mean']} | {r['server_rss_mb_end']} | {r['first_frame_s_max']} "
                     f"| {len(r['errors'])} |")
    return "\n".join(lines)


def _write_results_md(record: dict[str, Any], table: str) -> None:
    m, first = record["machine"], record["results"][0]
    loads = ", ".join(f"{r['mode']} {r['sessions']}: {r['load_average_before'][0]}" for r in record["results"])
    write_results_section("cluster", [
        "## The Ray path against the single-machine server (`python -m benchmarks.cluster`)",
        "",
        f"Recorded {record['date']} from {record['source']} on {m['cpu']}, {m['cores']} cores, Python {m['python']}; "
        f"Ray {record['ray']}. The same N loopback clients as the load benchmark (640x480 clip, up to "
        f"{first['input_fps']:g} fps, {first['engine']} engine, 256 output, frame numbers echoed for "
        f"glass-to-glass latency), {first['seconds']:g} s after the first frame, the first {WARMUP_S:g} s not "
        "counted, against `enliven serve` (inference in worker processes, one per core) and against "
        "`enliven serve --cluster ray` (a private one-node Ray on this machine: the front door, Ray's GCS, "
        "raylet and helpers, one actor process per session with its own peer connection and Animator). CPU % "
        "is of one core (200 % = both cores), summed over the server's whole process tree. "
        f"1-minute load average before each run (other work on the machine): {loads}.",
        "",
        table,
        "",
    ])


def run(sessions: tuple[int, ...], seconds: float, fps: float, engine: str, modes: tuple[str, ...],
        write: bool) -> list[dict[str, Any]]:
    import ray  # the cluster extra; only its version is recorded here

    results = []
    for n in sessions:
        for mode in modes:
            print(f"cluster benchmark: {mode}, {n} session(s), {seconds:g} s...", flush=True)
            results.append(bench(mode, n, seconds, fps, engine))
    table = markdown_table(results)
    print(table)
    for r in results:
        for e in r["errors"][:5]:
            print(f"  {r['mode']} {r['sessions']}: {e}")
    if write:
        record = {"benchmark": "cluster", "date": datetime.now(UTC).isoformat(timespec="seconds"),
                  "machine": machine_info(), "ray": ray.__version__, "source": _source_state(), "results": results}
        write_results_json("cluster", record)
        _write_results_md(record, table)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cluster", description=__doc__.split("\n")[0])
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 4], help="concurrent sessions per run")
    p.add_argument("--seconds", type=float, default=30.0, help="measured time per run (after the first frame)")
    p.add_argument("--fps", type=float, default=30.0, help="webcam frames per second each client sends")
    p.add_argument("--engine", choices=("trained", "analytic"), default="trained", help="engine of the sessions")
    p.add_argument("--modes", nargs="+", choices=tuple(MODES), default=list(MODES), help="paths to measure")
    p.add_argument("--write", action="store_true", help="write benchmarks/RESULTS.md and results/cluster.json")
    a = p.parse_args(argv)
    run(tuple(a.sessions), a.seconds, a.fps, a.engine, tuple(a.modes), a.write)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GLOG_minloglevel", "2")
    sys.exit(main())
