"""Machine facts recorded beside every benchmark figure."""
from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, object]:
    """CPU, core count, Python and the versions of the libraries on the frame path."""
    versions = {}
    for pkg in ("enliven", "numpy", "opencv-contrib-python", "mediapipe", "av", "onnxruntime", "torch"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def reference_workload(repeats: int = 30) -> dict[str, float]:
    """Milliseconds (median of ``repeats``) of fixed kernels like the frame path's, timed in the same run.

    Machines differ in ways a CPU name does not say (an Intel VM ran the warp 3x slower than an AMD
    EPYC with the same core count): these figures, recorded beside a benchmark's, let two runs on
    different machines be compared. Each kernel is single-threaded and allocation-free after warm-up:
    a float32 (4096, 192) x (192, 2) matmul (the spline's evaluation), a 512 x 512 bilinear remap
    (the warp's), elementwise float32 work on 512 x 512 x 3 (blends), and a 3 x 3 Gaussian blur.
    """
    import time

    import cv2
    import numpy as np
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a, b = rng.random((4096, 192), np.float32), rng.random((192, 2), np.float32)
    image = rng.integers(0, 255, (512, 512, 3), np.uint8)
    grid = np.dstack(np.meshgrid(np.arange(512, dtype=np.float32), np.arange(512, dtype=np.float32)))
    table = grid + rng.random((512, 512, 2), np.float32) * 4
    f, g = rng.random((512, 512, 3), np.float32), rng.random((512, 512, 3), np.float32)
    h = np.empty_like(f)

    def elementwise() -> None:
        np.multiply(f, 0.7, out=h)
        np.add(h, g, out=h)
        np.clip(h, 0.0, 1.0, out=h)

    kernels = {
        "matmul": lambda: a @ b,
        "remap": lambda: cv2.remap(image, table, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE),
        "elementwise": elementwise,
        "blur": lambda: cv2.GaussianBlur(image, (3, 3), 0),
    }
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    out: dict[str, float] = {}
    try:
        with threadpool_limits(1):
            for name, run in kernels.items():
                run()
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    run()
                    times.append((time.perf_counter() - t0) * 1e3)
                out[name + "_ms"] = round(float(np.median(times)), 4)
    finally:
        cv2.setNumThreads(threads)
    return out


RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"
RESULTS_DIR = RESULTS_MD.parent / "results"


def reference_line(reference: dict[str, float], when: str = "") -> str:
    """The machine reference as the benchmarks print it: ``machine reference (ms, median): matmul_ms 0.160, ...``."""
    label = f"machine reference{' ' + when if when else ''} (ms, median): "
    return label + ", ".join(f"{k} {v:.3f}" for k, v in reference.items())


def write_results_json(name: str, record: dict) -> Path:
    """Write a benchmark's record to ``results/<name>.json``; returns the path."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def write_results_section(name: str, lines: list[str]) -> None:
    """Put ``lines`` between the ``<!-- name:start -->`` / ``<!-- name:end -->`` markers of RESULTS.md.

    Other benchmarks' sections are kept; a missing section is appended.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = "\n".join([start, *lines, end])
    header = "# Benchmark results\n\nWritten by the benchmarks; do not edit by hand.\n"
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else header
    if start in text and end in text:
        text = text[:text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS_MD.write_text(text)
