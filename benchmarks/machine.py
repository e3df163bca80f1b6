"""Machine facts recorded beside every benchmark figure."""
from __future__ import annotations

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


RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"


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
