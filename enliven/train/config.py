"""TrainConfig: a training run, read from a TOML file and validated (an unknown key is an error).

A TOML file has top-level keys of ``TrainConfig`` and tables named after its nested sections:

    name = "refiner128"
    max_steps = 20000
    [model]
    name = "refiner128"
    [loss]
    adversarial = 0.05
    [pairs]
    pairs_per_person = 160
"""
from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.errors import EnlivenError
from .cache import DEFAULT_CACHE_DIR, DEFAULT_DATA_DIR
from .dataset import AugmentConfig, PairConfig
from .losses import LossWeights


class ConfigError(EnlivenError):
    """A training config file is unreadable or holds an unknown key or a value of the wrong type."""

    code = "config"


@dataclass(frozen=True)
class ModelConfig:
    name: str = "refiner128"  # registered generator (engine.generator.list_generators())
    disc_scales: int = 2  # patch discriminators: full and half resolution
    disc_width: int = 32  # channels of the first discriminator layer


@dataclass(frozen=True)
class OptimConfig:
    batch_size: int = 16  # pairs per step
    lr: float = 2e-4  # Adam learning rate of the generator
    lr_disc: float = 2e-4  # Adam learning rate of the discriminator
    beta1: float = 0.5
    beta2: float = 0.999
    warmup_steps: int = 200  # linear learning-rate warm-up
    grad_clip: float = 1.0  # max gradient norm of the generator (0 = off)


@dataclass(frozen=True)
class TrainConfig:
    name: str = "refiner128"  # run name: the run folder is <runs_dir>/<name>
    seed: int = 0  # seeds the model init, the sampling order and the augmentation
    max_steps: int = 20000  # stop after this many generator steps
    threads: int = 1  # torch CPU threads (leave a core free for others)
    device: str = "cpu"  # torch device of the models and the loss: "cpu", "cuda", "cuda:1"
    loader_workers: int = 0  # processes preparing batches ahead of the loop (0 = in the loop); same batches
    gan_start_step: int = 2000  # adversarial and feature-matching terms join after this step
    identity_every: int = 4  # identity loss on every n-th step (it is the costliest term)
    identity_samples: int = 8  # ... on the first this many pairs of the batch
    log_every: int = 20  # steps between TensorBoard scalars
    image_every: int = 500  # steps between TensorBoard image grids
    dev_every: int = 500  # steps between held-out (dev people) evaluations
    dev_pairs: int = 64  # held-out pairs evaluated
    checkpoint_minutes: float = 5.0  # wall-clock minutes between checkpoints
    keep_every: int = 2000  # also keep a copy of the checkpoint every this many steps
    init_weights: str = ""  # with no checkpoint yet: start the generator (and the step) from these weights;
    # "shipped" = models/weights of the model, "" = from scratch. A new machine without the run folder
    # then continues from the committed weights instead of step 0.
    data_dir: str = str(DEFAULT_DATA_DIR)  # the data set (MANIFEST.tsv); only split == train is used
    cache_dir: str = str(DEFAULT_CACHE_DIR)  # landmark cache and pair stores (outside the repo)
    runs_dir: str = str(DEFAULT_CACHE_DIR / "runs")  # checkpoints and TensorBoard logs (outside the repo)
    pairs_dir: str = ""  # a ready pair store (train/ and optional dev/, e.g. from ``python -m enliven.train.pack``):
    # used as it is, without the landmark cache or the data set (a GPU machine that has neither)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    pairs: PairConfig = field(default_factory=PairConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir).expanduser() / self.name


def _coerce(tp: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return from_dict(tp, value, where)
    origin = typing.get_origin(tp)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = typing.get_args(tp)[0]
        return tuple(_coerce(inner, v, where) for v in value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool or tp is str:
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected a {tp.__name__}, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass ``cls`` from a dict, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read and validate a TOML training config; ``overrides`` (top-level keys) win over the file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError as e:
        raise ConfigError(f"config file {path} not found") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
    data.update(overrides or {})
    return from_dict(TrainConfig, data, str(path))


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
