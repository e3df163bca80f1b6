"""``enliven evaluate``: registered on the main CLI's subparsers by ``add_evaluate_parser``."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

DEFAULT_OUT = Path("benchmarks") / "quality"  # relative to the working directory: run from the checkout


def _cmd_evaluate(args: argparse.Namespace) -> int:
    # loaded only when the command runs: evaluation pulls in torch, the data pipeline and the judges
    from .config import EvalConfig
    from .report import write_report
    from .run import evaluate

    logging.getLogger("enliven").setLevel(logging.INFO)
    cfg = EvalConfig(data_dir=str(args.data or ""), cache_dir=str(args.cache or ""), split=args.split,
                     frames_per_clip=args.frames, cross_pairs=args.cross_pairs,
                     weights=str(args.weights) if args.weights else None, grids_dir=str(args.grids or ""),
                     backend=args.backend, precision=args.precision, lid_slide=not args.squash_lids,
                     relight=not args.no_relight)
    report = evaluate(cfg, progress=not args.no_progress)
    md = write_report(report, args.out)
    s, t = report["self_reenactment"]["analytic"], report["self_reenactment"]["trained"]
    print(f"self-reenactment face L1 {s.get('l1_face', float('nan')):.4f} -> {t.get('l1_face', float('nan')):.4f}, "
          f"SSIM {s.get('ssim_face', float('nan')):.4f} -> {t.get('ssim_face', float('nan')):.4f}; report: {md}")
    return 0


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``evaluate`` (with ``func`` set) on the main parser's subparsers."""
    p = subparsers.add_parser(
        "evaluate", help="quality of analytic vs trained mode on the val split (JSON + Markdown)",
        description="Self- and cross-reenactment metrics of analytic and trained mode on held-out people.")
    p.add_argument("--data", type=Path, default=None, help="data set folder (default $ENLIVEN_DATA or ../shared/data)")
    p.add_argument("--cache", type=Path, default=None, help="landmark cache folder (default ~/.cache/enliven)")
    p.add_argument("--split", default="val", choices=("val", "train"))
    p.add_argument("--weights", type=Path, default=None, help="generator weights (default: the shipped ones)")
    p.add_argument("--backend", choices=("onnxruntime", "torch"), default="onnxruntime",
                   help="what runs the generator (default onnxruntime, as in the product)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32",
                   help="precision of the exported decoder (onnxruntime): its quality impact is what this measures")
    p.add_argument("--frames", type=int, default=40, help="driving frames per clip")
    p.add_argument("--cross-pairs", type=int, default=16, help="cross-reenactment (A, B) pairs")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"where quality.json, report.md and the public grid go (default {DEFAULT_OUT}, from the checkout)")
    p.add_argument("--grids", type=Path, default=None,
                   help="where grids showing val people go (default <cache>/eval, outside the repo)")
    p.add_argument("--squash-lids", action="store_true",
                   help="the warp without sliding lids (version 4; the trained rows use the refiner shipped for it, "
                        "step 7228, or --weights trained on it)")
    p.add_argument("--no-relight", action="store_true",
                   help="outputs without the shading that turns with the head (the Animator's relight stage)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_evaluate)
    return p
