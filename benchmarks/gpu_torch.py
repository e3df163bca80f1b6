"""The shipped refiner's per-frame decoder on a CUDA GPU in torch: time at batch 1-64 (each stream its own
photo code), fp32 and fp16, CUDA-graph replay, and fp16's difference from fp32 on real pairs.

ONNX Runtime's CUDA/TensorRT providers are not measured here (their wheels are not on the machines a GPU
is lent on); this is the torch path. Needs a CUDA device; writes results/gpu_torch.json and a RESULTS.md
section with ``--write``. Pairs: a pair store packed by ``enliven.train.pack`` (``--pairs``), if given.

    python -m benchmarks.gpu_torch [--pairs PACK.npz] [--write]
"""
from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from enliven.models.generator import load_generator

from .machine import RESULTS_DIR, write_results_section

BATCHES = (1, 2, 4, 8, 16, 32, 64)


def _time(fn, iters: int) -> float:
    """Median ms of ``fn`` over ``iters`` calls, synchronised."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(ts))


def throughput(model: torch.nn.Module, dtype: torch.dtype, graphs: bool) -> list[dict[str, object]]:
    """Decoder ms per call and frames/s at each batch size (inputs resident on the GPU)."""
    dec = model.decoder.to("cuda", dtype).eval()
    r, c = model.config.resolution_px, model.config.code_dim
    rows = []
    for n in BATCHES:
        x = torch.rand(n, 3, r, r, device="cuda", dtype=dtype)
        d = torch.rand(n, 3, r, r, device="cuda", dtype=dtype)
        g = torch.rand(n, 1, r, r, device="cuda", dtype=dtype)
        code = torch.randn(n, c, device="cuda", dtype=dtype)
        with torch.no_grad():
            if graphs:
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    for _ in range(3):
                        dec(x, d, g, code)
                torch.cuda.current_stream().wait_stream(s)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    dec(x, d, g, code)
                ms = _time(graph.replay, 200)
            else:
                ms = _time(lambda: dec(x, d, g, code), 100)
        rows.append({"dtype": str(dtype).replace("torch.", ""), "cuda_graph": graphs, "batch": n,
                     "call_ms": round(ms, 3), "frames_per_s": round(1000 * n / ms, 1)})
        print(rows[-1], flush=True)
    return rows


def fp16_difference(model: torch.nn.Module, pack: Path) -> dict[str, float]:
    """PSNR of the fp16 output against fp32 on the face gate of real pairs (whole 128 px outputs too)."""
    from enliven.train.pack import unpack
    from enliven.train.dataset import PairDataset, collate

    store = Path("/tmp/enliven_gpu_pairs")
    if not (store / "plan.npy").exists():
        unpack(pack, store, 8)
    data = PairDataset(store)
    b = collate([data.sample(i) for i in range(min(160, len(data)))])
    outs = {}
    for dtype in (torch.float32, torch.float16):
        m = model.to("cuda", dtype).eval()
        with torch.no_grad():
            args = [t.to("cuda", dtype) for t in (b.source, b.warped, b.drawing, b.gate)]
            outs[dtype] = (args[1] + m(*args).delta).clamp(0, 1).float()
    err = (outs[torch.float16] - outs[torch.float32]) ** 2
    gate = b.gate.to("cuda")
    mse_face = float((err * gate).sum() / (gate.sum() * 3))
    return {"pairs": int(b.source.shape[0]),
            "psnr_fp16_vs_fp32_face_db": round(10 * np.log10(1 / max(mse_face, 1e-12)), 2),
            "psnr_fp16_vs_fp32_whole_db": round(10 * np.log10(1 / max(float(err.mean()), 1e-12)), 2),
            "max_abs_diff": round(float((outs[torch.float16] - outs[torch.float32]).abs().max()), 5)}


def write_section(record: dict) -> None:
    """The RESULTS.md section of a record."""
    lines = ["## The refiner's decoder on a GPU, torch (`python -m benchmarks.gpu_torch`)", "",
             f"Recorded {record['date']} on {record['device']}, torch {record['torch']}, CUDA {record['cuda']}, "
             f"cuDNN {record['cudnn']}. Per-frame decoder only (inputs on the GPU, each stream its own photo "
             "code); ONNX Runtime's CUDA/TensorRT providers were not available there.", "",
             "| dtype | CUDA graph | batch | call ms | frames/s |", "|---|---|---|---|---|"]
    lines += [f"| {r['dtype']} | {r['cuda_graph']} | {r['batch']} | {r['call_ms']} | {r['frames_per_s']} |"
              for r in record["rows"]]
    if "fp16" in record:
        f = record["fp16"]
        lines += ["", f"fp16 against fp32 on {f['pairs']} real pairs: PSNR {f['psnr_fp16_vs_fp32_face_db']} dB "
                      f"inside the face gate, {f['psnr_fp16_vs_fp32_whole_db']} dB over the whole 128 px output, "
                      f"largest difference {f['max_abs_diff']}."]
    write_results_section("gpu_torch", lines + [""])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_torch", description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=Path, default=None, help="a packed pair store (enliven.train.pack)")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "gpu_torch.json")
    ap.add_argument("--record", type=Path, default=None, help="write RESULTS.md from this JSON record; no run")
    a = ap.parse_args(argv)
    if a.record:
        write_section(json.loads(a.record.read_text()))
        return 0
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return 2
    torch.backends.cudnn.benchmark = True
    model = load_generator()
    record = {"benchmark": "gpu_torch", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
              "cudnn": torch.backends.cudnn.version(), "rows": []}
    for dtype in (torch.float32, torch.float16):
        for graphs in (False, True):
            record["rows"] += throughput(load_generator(), dtype, graphs)
    if a.pairs:
        try:
            record["fp16"] = fp16_difference(model, a.pairs)
            print(record["fp16"], flush=True)
        except Exception as e:  # the throughput rows are worth keeping without it
            print(f"fp16 difference failed: {e!r}", flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(record, indent=2) + "\n")
    if a.write:
        write_section(record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
