"""What ``enliven evaluate`` measures on, and where its inputs and grids live."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ..engine.refine import Backend, Precision
from ..engine.relight import LightConfig
from ..train.cache import DEFAULT_CACHE_DIR, DEFAULT_DATA_DIR

GRID_ROWS = 8  # rows (one frame each) per grid image of val people


@dataclass(frozen=True)
class EvalConfig:
    data_dir: str = ""  # the data set (MANIFEST.tsv); default ../shared/data
    cache_dir: str = ""  # landmark cache; default ~/.cache/enliven
    split: str = "val"  # evaluate on this split only
    crop_px: int = 256  # crop side the engine runs at, pixels
    frames_per_clip: int = 40  # driving frames per clip, evenly spaced after the source frame
    flicker_frames: int = 12  # a run of consecutive frames per clip for the flicker measure
    csim_every: int = 2  # CSIM on every n-th evaluated frame (dlib is the slow part)
    cross_pairs: int = 16  # (photo of A, clip of B) pairs
    weights: str | None = None  # generator weights file; None = the shipped ones
    backend: Backend = "onnxruntime"  # what runs the generator: onnxruntime (as the product) or torch
    precision: Precision = "fp32"  # of the exported decoder: fp32, fp16 or int8 (onnxruntime only)
    grids_dir: str = ""  # where grids of val people go (outside the repo); default <cache_dir>/eval
    seed: int = 0  # of the one random generator that picks grid rows, pairs and public clips
    lid_slide: bool = True  # the warp with sliding lids (the default, version 6); False: version 4
    relight: bool = True  # the shading that turns with the head (engine.relight), as the Animator runs it

    @property
    def light(self) -> LightConfig | None:
        """The relight of every output (None: off)."""
        return LightConfig() if self.relight else None


class EvalPaths(NamedTuple):
    """The folders of an ``EvalConfig`` with its defaults filled in."""

    data_dir: Path  # holds MANIFEST.tsv and the clips
    cache_dir: Path  # holds the landmark cache
    grids_dir: Path  # image grids of val people (never committed)

    @classmethod
    def of(cls, cfg: EvalConfig) -> EvalPaths:
        cache_dir = Path(cfg.cache_dir or DEFAULT_CACHE_DIR)
        return cls(Path(cfg.data_dir or DEFAULT_DATA_DIR), cache_dir, Path(cfg.grids_dir or cache_dir / "eval"))
