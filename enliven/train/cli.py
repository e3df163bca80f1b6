"""``enliven train``: registered on the main CLI's subparsers by ``add_train_parser``."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

DEFAULT_CONFIG = Path("configs") / "refiner128.toml"  # relative to the working directory: run from the checkout


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
                   help=f"TOML training config (default {DEFAULT_CONFIG}, from the checkout)")
    p.add_argument("--name", default=None, help="run name (overrides the config's)")
    p.add_argument("--max-steps", type=int, default=None, help="stop at this step this time (resumable)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--ship", action="store_true",
                   help="do not train: write the run's last checkpoint as the shipped weights (enliven/models/weights/)")
    p.set_defaults(func=_cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m enliven.train.cli``: the train command alone."""
    import os

    os.environ.setdefault("GLOG_minloglevel", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="enliven")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
