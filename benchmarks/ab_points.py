"""A/B timing of the server's per-frame routine on face points, two checkouts interleaved.

Each checkout gets a worker process (pinned to one core, OpenCV on one thread as in the server's
inference workers) that builds ``SessionAnimator(builtin_photo(), EngineSettings(engine="trained"),
InferenceOptions("int8", 1))`` and animates the built-in clip's landmarks (MediaPipe, tracking mode,
as a page measures them) with ``SessionAnimator.points``. The two workers run the same chunk of
frames in alternation (order swapped every chunk), many rounds, so a busy shared host slows both
alike; the report gives per-stage medians and the median of the paired (same frame, same round)
differences. Stages: total (wall time of ``points``, watermark and label included), motion, warp,
generator (refiner inputs, decoder, delta) from ``Animator.last.timings_ms``, and cpu (process CPU
time of ``points``).

    python -m benchmarks.ab_points --base /path/to/old/checkout --new . --size 256 --rounds 4
    (--base-cv-threads 0: the base worker keeps OpenCV's default thread pool)
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FPS = 25.0
CHUNK_FRAMES = 25
STAGES = ("total", "motion", "warp", "generator", "cpu")


def clip_points_file() -> Path:
    """The built-in clip's face points (list of (478, 3) float32 or None), measured once and cached in a temp file."""
    path = Path(tempfile.gettempdir()) / "enliven_ab_points.pkl"
    if not path.exists():
        from benchmarks.load import clip_points
        from enliven.fixtures import driving_frames

        path.write_bytes(pickle.dumps(clip_points(driving_frames(640, 480, FPS), FPS)))
    return path


def serve(size_px: int, points_path: str, cv_threads: int) -> None:
    """The worker: animate the frames each stdin line names ("first last"), print their timings as JSON."""
    import cv2

    from enliven.engine.defaults import builtin_photo
    from enliven.server.session_animator import (
        EngineSettings,
        InferenceOptions,
        SessionAnimator,
    )

    if cv_threads > 0:
        cv2.setNumThreads(cv_threads)
    points = pickle.loads(Path(points_path).read_bytes())
    session = SessionAnimator(builtin_photo(), EngineSettings(crop_size_px=size_px, engine="trained"),
                              inference=InferenceOptions("int8", 1))
    for i in range(20):  # warm-up
        session.points(points[i], i / FPS, i)
    print("ready", flush=True)
    for line in sys.stdin:
        first, last = map(int, line.split())
        rows = []
        for i in range(first, last):
            c0, t0 = time.process_time(), time.perf_counter()
            session.points(points[i], i / FPS, i)
            wall, cpu = (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3
            stages = session._animator.last.timings_ms if session._animator is not None else {}
            rows.append([wall, stages.get("motion", 0.0), stages.get("warp", 0.0), stages.get("generator", 0.0), cpu])
        print(json.dumps(rows), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", help="checkout A (its root goes on PYTHONPATH); required")
    parser.add_argument("--new", default=".", help="checkout B")
    parser.add_argument("--size", type=int, default=256, help="crop size, pixels")
    parser.add_argument("--rounds", type=int, default=4, help="passes over the clip, each checkout")
    parser.add_argument("--cpu", type=int, default=0,
                        help="the core both workers are pinned to; -1: not pinned (as the server's workers)")
    parser.add_argument("--base-cv-threads", type=int, default=1,
                        help="OpenCV threads of the base worker (0: OpenCV's default, as inference workers had before "
                             "they were held to one); the new worker has one")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--points", help=argparse.SUPPRESS)
    parser.add_argument("--cv-threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.size, args.points, args.cv_threads)
        return
    if args.base is None:
        parser.error("--base is required")
    points_path = clip_points_file()
    frames = len(pickle.loads(points_path.read_bytes()))
    workers = {}
    for name, root in (("base", args.base), ("new", args.new)):
        root = str(Path(root).resolve())
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", "--size", str(args.size),
                                 "--points", str(points_path),
                                 "--cv-threads", str(args.base_cv_threads if name == "base" else 1)], cwd=root, env=dict(os.environ, PYTHONPATH=root),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if args.cpu >= 0:
            os.sched_setaffinity(proc.pid, {args.cpu})
        assert proc.stdin is not None and proc.stdout is not None
        while (line := proc.stdout.readline()).strip() != "ready":
            if not line:
                raise RuntimeError(f"the {name} worker ({root}) exited before it was ready")
        workers[name] = proc
    rows: dict[str, list[list[float]]] = {name: [] for name in workers}
    for r in range(args.rounds):
        for first in range(0, frames, CHUNK_FRAMES):
            order = list(workers) if (r + first // CHUNK_FRAMES) % 2 == 0 else list(workers)[::-1]
            for name in order:
                proc = workers[name]
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(f"{first} {min(first + CHUNK_FRAMES, frames)}\n")
                proc.stdin.flush()
                rows[name] += json.loads(proc.stdout.readline())
    for proc in workers.values():
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
    base, new = np.array(rows["base"]), np.array(rows["new"])
    print(f"{args.size} px, {args.rounds} rounds x {frames} frames, ms per frame (p50):")
    for name, a in (("base", base), ("new", new)):
        print(f"  {name:4s} " + " ".join(f"{s}={np.median(a[:, i]):.3f}" for i, s in enumerate(STAGES)))
    diff = new - base
    print("  new - base, paired p50: " + " ".join(f"{s}={np.median(diff[:, i]):+.3f}" for i, s in enumerate(STAGES)))


if __name__ == "__main__":
    main()
