"""``enliven evaluate``: the quality of analytic and trained mode on the data set's val split.

Self-reenactment (``self_reenact.py``), cross-reenactment and the public grid (``cross_reenact.py``),
the generator's cost (``cost.py``), then the report (``report.py``). One random generator, seeded
by the config, is passed through the stages in this order, so a run is reproducible.

Research data never enters the repo: image grids of val people go to ``grids_dir`` (outside the
repo by default); the committed grid shows the public-domain built-in photo driven by val clips,
with the driver drawn as landmarks only.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.contract import contract_for
from ..engine.warp import WarpConfig
from ..export.runner import open_runner
from ..models.generator import load_generator
from ..train.cache import build_landmark_cache
from .config import EvalConfig, EvalPaths
from .cost import GeneratorInfo, generator_cost
from .cross_reenact import public_grid, run_cross_reenactment
from .judges import Judges
from .regions import report_sections
from .report import build_report, write_grid
from .self_reenact import run_self_reenactment

log = logging.getLogger(__name__)


def evaluate(cfg: EvalConfig, progress: bool = True) -> dict[str, Any]:
    """Run the whole evaluation and write the grids of val people; returns the report for ``write_report``.

    Raises: ModelFileError when the `train` extra (the judges) or the weights are missing;
    EnlivenError when the data set's manifest is missing or malformed.
    """
    paths = EvalPaths.of(cfg)
    paths.grids_dir.mkdir(parents=True, exist_ok=True)
    if cfg.split != "val":
        log.warning("evaluating on split %r: the held-out people are in 'val'", cfg.split)
    clips = build_landmark_cache(paths.data_dir, paths.cache_dir, (cfg.split,), progress=progress)
    contract = contract_for(WarpConfig(lid_slide=cfg.lid_slide).version)  # the shipped weights of that warp
    model = load_generator(path=Path(cfg.weights) if cfg.weights else None, expected=contract)
    runner = open_runner(cfg.weights, cfg.backend, cfg.precision, expected=contract)
    judges = Judges.load()
    rng = np.random.default_rng(cfg.seed)

    own = run_self_reenactment(clips, paths.data_dir, cfg, runner, judges, rng, progress)
    write_grid(paths.grids_dir / "self_reenactment_open_mouth.png", own.open_mouth_grid)
    write_grid(paths.grids_dir / "self_reenactment_random.png", own.random_grid)
    cross = run_cross_reenactment(clips, paths.data_dir, cfg, runner, judges, rng, progress)
    write_grid(paths.grids_dir / "cross_reenactment.png", cross.grid)
    public = public_grid(clips, cfg.crop_px, runner, rng, cfg.light)

    decoder_cost = generator_cost(model, cfg.weights, cfg.precision, expected=contract)
    generator = GeneratorInfo.of(model, cfg.weights, runner.provider, cfg.precision)
    report = build_report(cfg, generator, own, cross, decoder_cost, paths.grids_dir, public)
    # quality v2: blinks, open mouths, colour, stillness (regions.py)
    report.update(report_sections(clips, paths.data_dir, cfg.crop_px, runner, cfg.weights, cfg.backend,
                                  cfg.precision, cfg.lid_slide, progress, cfg.light))
    return report
