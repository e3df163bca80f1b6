"""Frame-path benchmark: per-stage milliseconds (p50/p95) and end-to-end frames per second.

Both engines: analytic (warp only) and trained (the shipped refiner, run by torch for now).

Drives the built-in photo with a 640x480 "webcam" clip the project makes itself (see
enliven.fixtures), through the real stages: MediaPipe landmarks (tracking mode), motion,
warp, generator (none in analytic mode), paste-back, and VP8 encoding of the output frame
as the server would. End-to-end = wall time of the whole per-frame loop on one thread.
Run: ``enliven bench`` (``--write`` records benchmarks/RESULTS.md and results/frame_path.json).
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from enliven.engine.animator import STAGES, Animator, AnimatorConfig
from enliven.engine.defaults import builtin_photo
from enliven.fixtures import driving_frames

from .machine import machine_info, write_results_section

HERE = Path(__file__).resolve().parent
WARMUP_FRAMES = 20


def _encoder(size: tuple[int, int], fps: int = 30) -> av.CodecContext:
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height = size
    enc.pix_fmt = "yuv420p"
    enc.time_base = Fraction(1, fps)
    enc.bit_rate = 1_000_000
    enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    return enc


def _stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p95_ms": round(float(np.percentile(a, 95)), 3),
            "mean_ms": round(float(a.mean()), 3)}


def bench_config(config: AnimatorConfig, frames: int) -> dict[str, object]:
    """Time ``frames`` frames (after a warm-up) of the whole path with one configuration."""
    clip = driving_frames(640, 480, fps=30.0)
    photo = builtin_photo()
    per_stage: dict[str, list[float]] = {s: [] for s in (*STAGES, "encode", "total")}
    with Animator(config) as animator:
        animator.prepare(photo)
        size = (photo.shape[1], photo.shape[0]) if config.output == "photo" else (config.crop_size_px,) * 2
        enc = _encoder(size)
        for i in range(frames + WARMUP_FRAMES):
            frame = clip[i % len(clip)]
            t0 = time.perf_counter()
            out = animator.step(frame, t=i / 30)
            t1 = time.perf_counter()
            vf = av.VideoFrame.from_ndarray(out, format="rgb24")
            vf.pts = i
            enc.encode(vf)
            t2 = time.perf_counter()
            if i >= WARMUP_FRAMES:
                for s in STAGES:
                    per_stage[s].append(animator.last.timings_ms.get(s, 0.0))
                per_stage["encode"].append((t2 - t1) * 1e3)
                per_stage["total"].append((t2 - t0) * 1e3)
    stats = {s: _stats(v) for s, v in per_stage.items()}
    fps = 1000.0 / stats["total"]["mean_ms"]
    return {"crop_size_px": config.crop_size_px, "output": config.output, "mode": config.generator,
            "frames": frames, "warmup": WARMUP_FRAMES, "stages": stats, "fps": round(fps, 1)}


def run(frames: int = 300, sizes: tuple[int, ...] = (256, 512), write: bool = False) -> list[dict[str, object]]:
    """Benchmark each crop size; print a table; with ``write``, record JSON and Markdown."""
    results = [bench_config(replace(AnimatorConfig(), crop_size_px=s, generator=engine), frames)
               for engine in ("analytic", "trained") for s in sizes]
    table = markdown_table(results)
    print(table)
    if write:
        record = {"benchmark": "frame_path", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "machine": machine_info(), "results": results}
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "frame_path.json").write_text(json.dumps(record, indent=2) + "\n")
        _write_results_md(record, table)
    return results


def markdown_table(results: list[dict[str, object]]) -> str:
    cols = (*STAGES, "encode", "total")
    lines = ["| engine | crop | " + " | ".join(f"{c} p50/p95 ms" for c in cols) + " | fps |",
             "|---|---|" + "---|" * (len(cols) + 1)]
    for r in results:
        st = r["stages"]  # type: ignore[index]
        cells = " | ".join(f"{st[c]['p50_ms']:.2f} / {st[c]['p95_ms']:.2f}" for c in cols)
        lines.append(f"| {r['mode']} | {r['crop_size_px']} | {cells} | {r['fps']} |")
    return "\n".join(lines)


def _write_results_md(record: dict[str, object], table: str) -> None:
    """Replace the frame-path section of benchmarks/RESULTS.md, keeping the other sections."""
    m = record["machine"]
    section = [
        "## Frame path, analytic and trained (`enliven bench`)",
        "",
        f"Recorded {record['date']} on {m['cpu']}, {m['cores']} cores, Python {m['python']}; "  # type: ignore[index]
        f"versions {json.dumps(m['versions'])}.",  # type: ignore[index]
        "Driver: a 640x480 clip of the built-in photo moved by the built-in motion; output: the 512x512",
        "photo with the animated crop pasted back, VP8-encoded (realtime). One thread, "
        f"{record['results'][0]['frames']} frames after {WARMUP_FRAMES} warm-up frames.",  # type: ignore[index]
        "",
        table,
        "",
    ]
    write_results_section("frame_path", section)
