"""``enliven export``: the trained generator (and the eye patch refiner that runs with it) to ONNX, and a
TensorRT engine on GPU machines."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .compare import verify
from .tensorrt_engine import build_engine


def _batch(text: str) -> int | None:
    if text == "dynamic":
        return None
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch must be 'dynamic' or a positive integer; got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"batch must be >= 1; got {n}")
    return n


def _cmd_export(args: argparse.Namespace) -> int:
    from ..models.generator import DEFAULT_GENERATOR, load_generator
    from .to_onnx import export_generator

    model = load_generator(path=args.weights)
    out: Path = args.out
    report: dict[str, object] = {}
    for precision in args.precision:
        exported = export_generator(model, out / precision, batch=args.batch, precision=precision,
                                    opset=args.opset, stem=(args.weights.stem if args.weights else DEFAULT_GENERATOR))
        diffs = verify(model, exported)
        report[precision] = {"encoder": str(exported.encoder), "decoder": str(exported.decoder),
                             "decoder_bytes": exported.decoder.stat().st_size, "opset": exported.opset,
                             "batch": "dynamic" if exported.batch is None else exported.batch,
                             "checker": "passed", "max_abs_diff_vs_torch": diffs}
        print(f"{precision}: {exported.encoder} + {exported.decoder} ({exported.decoder.stat().st_size / 1e6:.2f} MB), "
              f"onnx.checker passed, max |onnx - torch| " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
        if args.tensorrt:
            engine = build_engine(exported.decoder, exported.decoder.with_suffix(".engine"), fp16=precision != "fp32")
            report[precision]["tensorrt_engine"] = str(engine)  # type: ignore[index]
            print(f"  TensorRT engine: {engine}")
    if args.weights is None and args.patches:
        report["eye_patch"] = _export_eye_patch(out / "eye_patch")
    (out / "export.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


def _export_eye_patch(out: Path) -> dict[str, object]:
    """The shipped eye patch refiner (the default warp's) to ONNX, checked against torch: its report entry."""
    from ..models.generator import check_sha256, shipped_weights_path
    from ..models.patches import load_patch_refiner
    from .patches import compare_patch_refiner, export_patch_refiner

    weights = shipped_weights_path("patch-eye64")
    check_sha256(weights)
    model = load_patch_refiner(weights)
    graph = export_patch_refiner(model, out / f"{weights.stem}.onnx")
    diffs = compare_patch_refiner(model, graph)
    print(f"eye patch (fp32, dynamic batch): {graph}, onnx.checker passed, max |onnx - torch| "
          + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    return {"graph": str(graph), "batch": "dynamic", "checker": "passed", "max_abs_diff_vs_torch": diffs}


def add_export_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``export`` (with ``func`` set) on the main parser's subparsers."""
    p = subparsers.add_parser(
        "export", help="export the trained generator to ONNX (and TensorRT on a GPU machine)",
        description="Exports the source encoder and the per-frame decoder to ONNX, runs onnx.checker and "
                    "compares them with torch on random and real inputs (fp32 within 1e-3). The runtime does "
                    "this by itself on first use and caches the result; this command is for deployment and checks.")
    p.add_argument("--weights", type=Path, default=None, help="generator weights file (default: the shipped ones)")
    p.add_argument("-o", "--out", type=Path, default=Path("enliven-onnx"), help="output folder (default enliven-onnx)")
    p.add_argument("--batch", type=_batch, default=None, help="'dynamic' (default) or a static batch size")
    p.add_argument("--precision", nargs="+", choices=("fp32", "fp16", "int8"), default=["fp32"],
                   help="one or more: fp32 (default), fp16 (GPU), int8 (CPU, calibrated on the built-in clip)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 or newer (default 17)")
    p.add_argument("--tensorrt", action="store_true",
                   help="also build a TensorRT engine (needs a GPU and the gpu extra)")
    p.add_argument("--no-patches", dest="patches", action="store_false",
                   help="leave out the eye patch refiner (exported, fp32, with the shipped generator by default)")
    p.set_defaults(func=_cmd_export)
    return p
