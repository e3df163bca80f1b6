"""Frame-path benchmark: per-stage milliseconds (p50/p95), end-to-end frames per second, batch throughput.

Engines: analytic (warp only) and trained (the shipped refiner) run by torch or by ONNX Runtime
(fp32, int8), serial or pipelined (landmarks of the next frame in a second process while this
one warps and refines the current frame).

Drives the built-in photo with a 640x480 "webcam" clip the project makes itself (see
enliven.fixtures), through the real stages: MediaPipe landmarks (tracking mode), motion,
warp, generator, paste-back, and VP8 encoding of the output frame as the server would.
The invisible watermark is embedded in every output frame, as the server and the CLI do.
End-to-end = wall time of the whole per-frame loop. Throughput against batch size: the
refiner's per-frame part (inputs, decoder, delta added) for several streams in one call.
Run from the checkout: ``python -m benchmarks.frame_path`` (``--write`` records benchmarks/RESULTS.md and
results/frame_path.json).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from fractions import Fraction
from typing import Any

import av
import numpy as np

from enliven.animation.animator import STAGES, Animator, AnimatorConfig
from enliven.engine.defaults import builtin_photo
from enliven.fixtures import driving_frames
from enliven.provenance.watermark import Watermarker

from .machine import machine_info, reference_line, reference_workload, write_results_json, write_results_section

WARMUP_FRAMES = 20
TARGETS = {256: (30.0, 33.0), 512: (20.0, 50.0)}  # trained mode on 2 CPU cores: fps at least, p95 ms at most


@dataclass(frozen=True)
class Engine:
    """One row of the benchmark: how the frame path is configured."""

    label: str
    overrides: dict[str, Any] = field(default_factory=dict)  # AnimatorConfig fields
    pipelined: bool = False


ENGINES = (
    Engine("analytic", {"engine": "analytic"}),
    Engine("trained, torch", {"backend": "torch"}),
    Engine("trained, onnxruntime fp32", {}),
    Engine("trained, onnxruntime int8", {"precision": "int8"}),
    Engine("trained, onnxruntime fp32, pipelined", {}, pipelined=True),
    Engine("trained, onnxruntime int8, pipelined", {"precision": "int8"}, pipelined=True),
    Engine("trained, refiner128s (distilled), onnxruntime fp32", {"generator": "refiner128s"}),
    Engine("trained, refiner128s (distilled), onnxruntime int8 (the server's)",
           {"generator": "refiner128s", "precision": "int8"}),
    Engine("trained, onnxruntime fp32, no eye patch",  # 512 only: the default there runs the eye patch refiner
           {"eye_patch_weights": None}),
)


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


def bench_config(config: AnimatorConfig, frames: int, pipelined: bool = False) -> dict[str, object]:
    """Time ``frames`` frames (after a warm-up) of the whole path with one configuration.

    total = wall time of one loop iteration (step + encode); latency = from handing a frame in
    to its output being encoded (one frame more than total when pipelined).
    """
    from enliven.animation.pipeline import PipelinedAnimator

    clip = driving_frames(640, 480, fps=30.0)
    photo = builtin_photo()
    per_stage: dict[str, list[float]] = {s: [] for s in (*STAGES, "watermark", "encode", "total", "latency")}
    watermark = Watermarker()
    animator = Animator(config)
    runner: Any = PipelinedAnimator(animator) if pipelined else animator
    handed: dict[int, float] = {}
    with runner:
        runner.prepare(photo)
        size = (photo.shape[1], photo.shape[0]) if config.output == "photo" else (config.crop_size_px,) * 2
        enc = _encoder(size)
        for i in range(frames + WARMUP_FRAMES):
            frame = clip[i % len(clip)]
            t0 = time.perf_counter()
            handed[i] = t0
            out = runner.step(frame, t=i / 30)
            if out is None:
                continue
            done = i - 1 if pipelined else i
            t1 = time.perf_counter()
            out = watermark.embed(out)  # every frame the server streams or a file holds is marked
            tw = time.perf_counter()
            vf = av.VideoFrame.from_ndarray(out, format="rgb24")
            vf.pts = done
            enc.encode(vf)
            t2 = time.perf_counter()
            if done >= WARMUP_FRAMES:
                timings = runner.last.timings_ms
                for s in STAGES:
                    per_stage[s].append(timings.get("landmark_wait" if pipelined and s == "landmarks" else s, 0.0))
                per_stage["watermark"].append((tw - t1) * 1e3)
                per_stage["encode"].append((t2 - tw) * 1e3)
                per_stage["total"].append((t2 - t0) * 1e3)
                per_stage["latency"].append((t2 - handed.pop(done)) * 1e3)
    stats = {s: _stats(v) for s, v in per_stage.items()}
    fps = 1000.0 / stats["total"]["mean_ms"]
    return {"crop_size_px": config.crop_size_px, "output": config.output, "mode": config.engine,
            "backend": config.backend if config.engine == "trained" else None, "precision": config.precision,
            "pipelined": pipelined, "frames": len(per_stage["total"]), "warmup": WARMUP_FRAMES, "stages": stats,
            "fps": round(fps, 1)}


def batch_throughput(precisions: tuple[str, ...] = ("fp32", "int8"), batches: tuple[int, ...] = (1, 2, 4, 8),
                     crop_size_px: int = 256, calls: int = 60) -> list[dict[str, object]]:
    """Frames per second of the refiner's per-frame part when N streams share one decoder call.

    Each stream has its own photo code (the server's case); inputs are real frames of the
    built-in clip. Timed: refiner inputs + decoder + delta upsampled and added (``refine_batch``).
    """
    import cv2

    from enliven.engine.refine import refine_batch
    from enliven.engine.runtime import OnnxModel, RuntimeConfig
    from enliven.export.cache import ensure_exported
    from enliven.export.runner import open_runner
    from enliven.export.samples import real_inputs

    s = real_inputs(128, frames=max(batches))
    crops = [cv2.resize((f["warped"][0].transpose(1, 2, 0) * 255).astype(np.uint8), (crop_size_px,) * 2)
             for f in s.decoder]
    with Animator(AnimatorConfig(crop_size_px=crop_size_px, output="crop", engine="analytic")) as anim:
        anim.prepare(builtin_photo())
        points = anim.source.points  # type: ignore[union-attr]
    rows = []
    for precision in precisions:
        runner = open_runner(precision=precision)  # type: ignore[arg-type]
        runner.prepare(crops[0])
        assert runner.code is not None
        # the per-frame runner's graphs take batch 1; batching streams needs the dynamic-batch export
        decoder = OnnxModel(ensure_exported(None, precision).decoder, RuntimeConfig())  # type: ignore[arg-type]
        for n in batches:
            codes = np.repeat(runner.code, n, 0)
            args = (decoder, runner.resolution_px, crops[:n], [points] * n, codes)
            for _ in range(5):
                refine_batch(*args)
            ts = []
            for _ in range(max(10, calls // n)):
                t0 = time.perf_counter()
                refine_batch(*args)
                ts.append((time.perf_counter() - t0) * 1e3)
            p50 = float(np.median(ts))
            rows.append({"precision": precision, "batch": n, "call_p50_ms": round(p50, 2),
                         "per_frame_ms": round(p50 / n, 2), "frames_per_s": round(1000.0 * n / p50, 1),
                         "provider": runner.provider})
    return rows


def run(frames: int = 300, sizes: tuple[int, ...] = (256, 512), write: bool = False,
        engines: tuple[Engine, ...] = ENGINES) -> list[dict[str, object]]:
    """Benchmark each engine and crop size, then batch throughput; print tables; with ``write``, record them.

    The machine reference (fixed kernels, see machine.reference_workload) is timed before and after,
    so figures from different machines, or from a busy one, can be put side by side.
    """
    before = reference_workload()
    print(reference_line(before), flush=True)
    results = []
    for engine in engines:
        for s in sizes:
            if "eye_patch_weights" in engine.overrides and s != 512:
                continue  # the eye patch's own cost: recorded at 512
            config = replace(AnimatorConfig(), crop_size_px=s, **engine.overrides)
            r = bench_config(config, frames, engine.pipelined)
            r["engine"] = engine.label
            results.append(r)
            print(f"{engine.label} @ {s}: {r['fps']} fps, total p50/p95 {r['stages']['total']['p50_ms']:.1f} / "  # type: ignore[index]
                  f"{r['stages']['total']['p95_ms']:.1f} ms", flush=True)  # type: ignore[index]
    batches = batch_throughput()
    after = reference_workload()
    reference = {k: round((before[k] + after[k]) / 2, 4) for k in before}
    print(reference_line(after, "after"), flush=True)
    table, btable = markdown_table(results), batch_table(batches)
    print(table, "", btable, sep="\n")
    if write:
        record = {"benchmark": "frame_path", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "machine": machine_info(), "reference_ms": reference, "results": results,
                  "batch_throughput": batches}
        write_results_json("frame_path", record)
        _write_results_md(record, table, btable)
    return results


def _target(r: dict[str, Any]) -> str:
    if r["mode"] != "trained" or r["crop_size_px"] not in TARGETS:
        return ""
    fps_min, p95_max = TARGETS[r["crop_size_px"]]
    ok = r["fps"] >= fps_min and r["stages"]["total"]["p95_ms"] <= p95_max
    return ("met" if ok else "missed") + f" (>= {fps_min:g} fps, p95 <= {p95_max:g} ms)"


def markdown_table(results: list[dict[str, Any]]) -> str:
    cols = (*STAGES, "watermark", "encode", "total", "latency")
    lines = ["| engine | crop | " + " | ".join(f"{c} p50/p95 ms" for c in cols) + " | fps | target |",
             "|---|---|" + "---|" * (len(cols) + 2)]
    for r in results:
        st = r["stages"]
        cells = " | ".join(f"{st[c]['p50_ms']:.2f} / {st[c]['p95_ms']:.2f}" for c in cols)
        lines.append(f"| {r['engine']} | {r['crop_size_px']} | {cells} | {r['fps']} | {_target(r)} |")
    return "\n".join(lines)


def batch_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| precision | batch | call p50 ms | per frame ms | frames/s |", "|---|---|---|---|---|"]
    lines += [f"| {r['precision']} | {r['batch']} | {r['call_p50_ms']:.2f} | {r['per_frame_ms']:.2f} | "
              f"{r['frames_per_s']} |" for r in rows]
    return "\n".join(lines)


def _write_results_md(record: dict[str, Any], table: str, btable: str) -> None:
    """Replace the frame-path section of benchmarks/RESULTS.md, keeping the other sections."""
    m = record["machine"]
    r0 = record["results"][0]
    section = [
        "## Frame path: analytic and trained, torch and ONNX Runtime, serial and pipelined (`python -m benchmarks.frame_path`)",
        "",
        f"Recorded {record['date']} on {m['cpu']}, {m['cores']} cores, Python {m['python']}; "
        f"versions {json.dumps(m['versions'])}. No GPU on this machine. Machine reference (fixed single-thread "
        "kernels, ms, mean of before and after): "
        + ", ".join(f"{k} {v:.3f}" for k, v in record["reference_ms"].items()) + ".",
        "Driver: a 640x480 clip of the built-in photo moved by the built-in motion; output: the 512x512",
        "photo with the animated crop pasted back, VP8-encoded (realtime). The generator's ONNX Runtime",
        "session uses the machine's cores (2 threads, no spinning); torch 1 thread. Pipelined: MediaPipe runs",
        "in a second process one frame ahead; its landmarks column is the time this process waited for",
        f"them. {r0['frames']} frames per row after {WARMUP_FRAMES} warm-up frames; total = one loop iteration",
        "(1000 / mean = fps); latency = frame handed in -> its output encoded.",
        "",
        table,
        "",
        "### Throughput against batch size (refiner per-frame part, ONNX Runtime on 2 CPU threads, 256 crops)",
        "",
        "N streams' frames (each with its own photo code) in one decoder call, with their inputs and the",
        "delta added back, as the server would batch sessions.",
        "",
        btable,
        "",
        batching_verdict(record["batch_throughput"]),
        "",
    ]
    write_results_section("frame_path", section)


def batching_verdict(rows: list[dict[str, Any]]) -> str:
    """One sentence: how much batching raises the refiner's throughput here, and what the server does about it."""
    gains = []
    for precision in sorted({r["precision"] for r in rows}):
        mine = [r for r in rows if r["precision"] == precision]
        one = next(r["frames_per_s"] for r in mine if r["batch"] == 1)
        best = max(mine, key=lambda r: r["frames_per_s"])
        gains.append(f"{precision} +{100 * (best['frames_per_s'] / one - 1):.0f} % at batch {best['batch']}")
    return ("Batching raises the refiner's throughput by " + ", ".join(gains) + " on this CPU. The refiner is about "
            "a third of a frame's work, so the whole path would gain a few per cent, while every frame would wait "
            "for its batch partners: the server does not batch sessions on a CPU. The dynamic-batch graph and "
            "`refine.refine_batch` are the way in for GPU servers, where batching pays.")


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.frame_path``: time the frame path, optionally record the results."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.frame_path", description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=300, help="frames timed per configuration")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="crop sizes to time")
    p.add_argument("--write", action="store_true", help="write benchmarks/RESULTS.md and results JSON")
    args = p.parse_args(argv)
    run(frames=args.frames, sizes=tuple(args.sizes), write=args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
