"""``enliven train``: registered on the main CLI's subparsers by ``add_train_parser``."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[3] / "configs" / "refiner128.toml"


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .loop import run, ship_weights

    overrides: dict[str, object] = {}
    if args.name:
        overrides["name"] = args.name
    cfg = load_config(args.config, overrides)
    logging.getLogger("enliven").setLevel(logging.INFO)
    if args.ship:
        path, digest, step = ship_weights(cfg.run_dir)
        print(f"shipped step {step} of {cfg.run_dir} as {path} (sha256 {digest[:16]}...)")
        return 0
    run_dir = run(cfg, fresh=args.fresh, progress=not args.no_progress, max_steps=args.max_steps)
    print(f"run folder: {run_dir} (checkpoint.pt, weights_latest.pt, tb/ for TensorBoard)")
    return 0


def add_train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``train`` (with ``func`` set) on the main parser's subparsers."""
    p = subparsers.add_parser(
        "train", help="train the generator (resumes the run's last checkpoint)",
        description="Train the learned generator on self-reenactment pairs of the data set's train split. "
                    "Builds the landmark cache and the pair stores first (outside the repo, resumable), "
                    "then trains, checkpointing every few minutes; running it again resumes.")
    p.add_argument("config", nargs="?", type=Path, default=DEFAULT_CONFIG,
                   help=f"TOML training config (default {DEFAULT_CONFIG.name})")
    p.add_argument("--name", default=None, help="run name (overrides the config's)")
    p.add_argument("--max-steps", type=int, default=None, help="stop at this step this time (resumable)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--ship", action="store_true",
                   help="do not train: write the run's last checkpoint as the shipped weights (engine/weights/)")
    p.set_defaults(func=_cmd_train)
    return p


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluate import EvalConfig, evaluate, write_report

    logging.getLogger("enliven").setLevel(logging.INFO)
    cfg = EvalConfig(data_dir=str(args.data or ""), cache_dir=str(args.cache or ""), split=args.split,
                     frames_per_clip=args.frames, cross_pairs=args.cross_pairs,
                     weights=str(args.weights) if args.weights else None, grids_dir=str(args.grids or ""),
                     backend=args.backend, precision=args.precision)
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
    p.add_argument("--data", type=Path, default=None, help="data set folder (default ../shared/data)")
    p.add_argument("--cache", type=Path, default=None, help="landmark cache folder (default ~/.cache/enliven)")
    p.add_argument("--split", default="val", choices=("val", "train"))
    p.add_argument("--weights", type=Path, default=None, help="generator weights (default: the shipped ones)")
    p.add_argument("--backend", choices=("onnxruntime", "torch"), default="onnxruntime",
                   help="what runs the generator (default onnxruntime, as in the product)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32",
                   help="precision of the exported decoder (onnxruntime): its quality impact is what this measures")
    p.add_argument("--frames", type=int, default=40, help="driving frames per clip")
    p.add_argument("--cross-pairs", type=int, default=16, help="cross-reenactment (A, B) pairs")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[3] / "benchmarks" / "quality",
                   help="where quality.json, report.md and the public grid go")
    p.add_argument("--grids", type=Path, default=None,
                   help="where grids showing val people go (default <cache>/eval, outside the repo)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_evaluate)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m enliven.engine.train.cli``: the train command alone (until it is wired into enliven)."""
    import os

    os.environ.setdefault("GLOG_minloglevel", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="enliven")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    add_evaluate_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
