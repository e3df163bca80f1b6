"""The training loop: generator + discriminator steps, held-out checks, TensorBoard, checkpoints, resume.

Determinism: the batch of step k is a pure function of (seed, k): an epoch's order is a seeded
permutation and each sample's augmentation is seeded by (seed, k, position). A checkpoint holds
the models, the optimisers and the step, so a resumed run takes exactly the steps the
uninterrupted one would have taken (on the same machine and thread count).
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..engine.contract import contract_for
from ..models.generator import (
    WEIGHTS_DIR,
    Refiner,
    count_flops,
    count_params,
    create_generator,
    generator_spec,
    load_generator,
    save_weights,
    shipped_weights_path,
)
from .cache import build_landmark_cache
from .config import TrainConfig, to_dict
from .dataset import AugmentConfig, Batch, PairDataset, build_pairs, collate
from .losses import (
    MultiScaleDiscriminator,
    PerceptualLoss,
    composite,
    crop_boxes,
    d_hinge_loss,
    eye_boxes,
    feature_matching,
    g_hinge_loss,
    masked_l1,
    mouth_boxes,
    ms_ssim,
)

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
PATCH_PX = 64  # side of the mouth and eye patches of the patch perceptual loss


@dataclass
class StepResult:
    step: int
    losses: dict[str, float]


def make_batch(train_set: PairDataset, cfg: TrainConfig, step: int) -> Batch:
    """The batch of ``step`` of a training run (``seeded_batch`` with the run's batch size, seed and augmentation)."""
    return seeded_batch(train_set, cfg.optim.batch_size, cfg.seed, cfg.augment, step)


def seeded_batch(train_set: PairDataset, batch_size: int, seed: int, augment: AugmentConfig | None,
                 step: int) -> Batch:
    """The batch of ``step``: a pure function of (seed, step), on the CPU (epochs are seeded permutations)."""
    n, b = len(train_set), batch_size
    per_epoch = max(n // b, 1)
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    indices = order[k * b:(k + 1) * b] if n >= b else order
    samples = [train_set.sample(int(i), np.random.default_rng([seed, step, j])) for j, i in enumerate(indices)]
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return collate(samples, augment, gen)


class _StepBatches(torch.utils.data.Dataset):
    """Batches of steps ``start..end-1`` for a DataLoader whose workers prepare them ahead of the loop."""

    def __init__(self, train_set: PairDataset, cfg: TrainConfig, start: int, end: int) -> None:
        self.train_set, self.cfg, self.start, self.end = train_set, cfg, start, end

    def __len__(self) -> int:
        return max(self.end - self.start, 0)

    def __getitem__(self, k: int) -> Batch:
        return make_batch(self.train_set, self.cfg, self.start + k)


def batch_stream(train_set: PairDataset, cfg: TrainConfig, start: int, end: int) -> Any:
    """The batches of steps ``start..end-1`` in order: from ``cfg.loader_workers`` processes, or made in turn."""
    if cfg.loader_workers <= 0:
        return (make_batch(train_set, cfg, s) for s in range(start, end))
    return iter(torch.utils.data.DataLoader(
        _StepBatches(train_set, cfg, start, end), batch_size=None, shuffle=False, num_workers=cfg.loader_workers,
        prefetch_factor=4, pin_memory=cfg.device.startswith("cuda")))


def to_device(b: Batch, device: torch.device) -> Batch:
    """Every tensor of a batch on ``device``."""
    return Batch(*(t.to(device, non_blocking=True) for t in b))


class Trainer:
    """One training run's models and optimisers. ``step()`` trains on the batch of the current step."""

    def __init__(self, cfg: TrainConfig, train_set: PairDataset,
                 perceptual: PerceptualLoss | None = None,
                 identity: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.device = torch.device(cfg.device)
        self.generator: Refiner = create_generator(cfg.model.name).to(self.device)
        self.disc = MultiScaleDiscriminator(cfg.model.disc_scales, cfg.model.disc_width).to(self.device)
        o = cfg.optim
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=o.lr, betas=(o.beta1, o.beta2))
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=o.lr_disc, betas=(o.beta1, o.beta2))
        self.train_set = train_set
        self.perceptual = perceptual.to(self.device) if perceptual is not None else None
        self.identity = identity
        self.global_step = 0

    # --- data ------------------------------------------------------------------------------------
    def batch(self, step: int) -> Batch:
        return make_batch(self.train_set, self.cfg, step)

    # --- one step ----------------------------------------------------------------------------------
    def _lr_scale(self, step: int) -> float:
        return min(1.0, (step + 1) / max(self.cfg.optim.warmup_steps, 1))

    def generator_losses(self, b: Batch, step: int, pred: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        w = self.cfg.loss
        parts: dict[str, torch.Tensor] = {}
        parts["l1"] = masked_l1(pred, b.target, b.weight)
        if w.ssim:
            parts["ssim"] = 1 - ms_ssim(pred, b.target, b.weight)
        comp = composite(pred, b.target, b.valid)
        if self.perceptual is not None and w.perceptual:
            parts["perceptual"] = self.perceptual(comp, b.target)
        if self.perceptual is not None and w.patch_perceptual:
            boxes = torch.cat([mouth_boxes(b.driven_points), eye_boxes(b.driven_points)])
            rep = boxes.shape[0] // comp.shape[0]
            parts["patch_perceptual"] = self.perceptual(crop_boxes(comp.repeat(rep, 1, 1, 1), boxes, PATCH_PX),
                                                        crop_boxes(b.target.repeat(rep, 1, 1, 1), boxes, PATCH_PX))
        if step >= self.cfg.gan_start_step and (w.adversarial or w.feature_matching):
            self.disc.requires_grad_(False)
            fake = self.disc(comp, b.drawing)
            with torch.no_grad():
                real = self.disc(b.target, b.drawing)
            parts["adversarial"] = g_hinge_loss(fake)
            parts["feature_matching"] = feature_matching(real, fake)
            self.disc.requires_grad_(True)
        if self.identity is not None and w.identity and step % max(self.cfg.identity_every, 1) == 0:
            k = self.cfg.identity_samples
            parts["identity"] = self.identity(comp[:k], b.target[:k], b.driven_points[:k])
        total = sum(getattr(w, k) * v for k, v in parts.items())
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def step(self, batch: Batch | None = None) -> StepResult:
        """Train on the batch of the current step (``batch``, if made ahead); returns its losses and advances."""
        step = self.global_step
        b = to_device(batch if batch is not None else self.batch(step), self.device)
        self.generator.train()
        scale = self._lr_scale(step)
        for g in self.opt_g.param_groups:
            g["lr"] = self.cfg.optim.lr * scale
        for g in self.opt_d.param_groups:
            g["lr"] = self.cfg.optim.lr_disc * scale
        out = self.generator(b.source, b.warped, b.drawing, b.gate)
        pred = b.warped + out.delta
        total, parts = self.generator_losses(b, step, pred)
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        if self.cfg.optim.grad_clip:
            parts["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.generator.parameters(),
                                                                      self.cfg.optim.grad_clip))
        self.opt_g.step()
        parts["total"] = float(total.detach())
        parts["mask_mean"] = float(out.mask.mean())
        if step >= self.cfg.gan_start_step and (self.cfg.loss.adversarial or self.cfg.loss.feature_matching):
            comp = composite(pred.detach(), b.target, b.valid)
            loss_d = d_hinge_loss(self.disc(b.target, b.drawing), self.disc(comp, b.drawing))
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
            parts["disc"] = float(loss_d)
        self.global_step += 1
        return StepResult(step, parts)

    # --- checkpoints ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"step": self.global_step, "generator": self.generator.state_dict(), "disc": self.disc.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "config": to_dict(self.cfg),
                "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.disc.load_state_dict(state["disc"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.global_step = int(state["step"])
        torch.set_rng_state(state["torch_rng"])

    def save(self, path: Path) -> None:
        """Write a checkpoint atomically (a crash mid-write leaves the previous one intact)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)

    def load(self, path: Path) -> None:
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=False))


# --- held-out check -----------------------------------------------------------------------------------

def dev_metrics(generator: Refiner, dev: PairDataset, count: int,
                device: torch.device | str = "cpu") -> dict[str, float]:
    """Face-region L1 and PSNR of the analytic warp and of the refined output on the first ``count`` dev pairs."""
    idx = list(range(min(count, len(dev))))
    if not idx:
        return {}
    generator.eval()
    sums: dict[str, float] = {}
    with torch.no_grad():
        for start in range(0, len(idx), 16):
            b = to_device(collate([dev.sample(i) for i in idx[start:start + 16]]), torch.device(device))
            pred = b.warped + generator(b.source, b.warped, b.drawing, b.gate).delta
            face = b.regions[:, :1] * b.valid
            mouth = b.regions[:, 1:2] * b.valid
            for name, img in (("analytic", b.warped), ("trained", pred.clamp(0, 1))):
                err = (img - b.target).abs()
                mse = ((img - b.target) ** 2 * face).sum((1, 2, 3)) / (face.sum((1, 2, 3)) * 3).clamp_min(1)
                sums[f"{name}/face_l1"] = sums.get(f"{name}/face_l1", 0.0) + float(
                    (err * face).sum() / (face.sum() * 3))
                sums[f"{name}/mouth_l1"] = sums.get(f"{name}/mouth_l1", 0.0) + float(
                    (err * mouth).sum() / (mouth.sum() * 3).clamp_min(1))
                sums[f"{name}/face_psnr"] = sums.get(f"{name}/face_psnr", 0.0) + float(
                    (10 * torch.log10(1 / mse.clamp_min(1e-10))).mean())
    batches = math.ceil(len(idx) / 16)
    generator.train()
    return {k: v / batches for k, v in sums.items()}


def image_grid(b: Batch, pred: torch.Tensor, rows: int = 4) -> torch.Tensor:
    """(3, rows * R, 4 * R): source | analytic | trained | target for the first rows of a batch."""
    r = min(rows, b.source.shape[0])
    cols = [b.source[:r], b.warped[:r], pred[:r].clamp(0, 1), b.target[:r]]
    return torch.cat([torch.cat(list(c), dim=1) for c in cols], dim=2)


# --- the run ---------------------------------------------------------------------------------------------

class _Stop:
    """Turns SIGTERM/SIGINT into a flag, so the loop checkpoints before it exits."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True


def run(cfg: TrainConfig, fresh: bool = False, progress: bool = True, max_steps: int | None = None) -> Path:
    """Train (or resume) the run ``cfg.name``: cache, pairs, then steps until ``max_steps``. Returns the run dir."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    torch.set_num_threads(cfg.threads)
    train_set, dev_set = _pair_sets(cfg, progress)
    identity = None
    if cfg.loss.identity:
        from .identity import IdentityLoss

        identity = IdentityLoss()
    trainer = Trainer(cfg, train_set, PerceptualLoss(), identity)
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / CHECKPOINT
    if ckpt.exists() and not fresh:
        trainer.load(ckpt)
        log.info("resumed %s at step %d", ckpt, trainer.global_step)
    elif cfg.init_weights and not fresh:
        _init_from_weights(trainer, cfg.init_weights)
    (run_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=1))
    flops, enc_flops = count_flops(trainer.generator)
    log.info("generator %s: %.3f GFLOP/frame, %.3f GFLOP/photo, %d + %d parameters; %d train pairs, %d dev pairs "
             "on %s", cfg.model.name, flops / 1e9, enc_flops / 1e9, count_params(trainer.generator.decoder),
             count_params(trainer.generator.encoder), len(train_set), len(dev_set) if dev_set else 0, cfg.device)
    writer = SummaryWriter(str(run_dir / "tb"), purge_step=trainer.global_step or None)
    stop = _Stop()
    end = min(cfg.max_steps, max_steps if max_steps is not None else cfg.max_steps)
    last_save = time.monotonic()
    bar = tqdm(total=end, initial=trainer.global_step, desc=cfg.name, unit="step", disable=not progress,
               mininterval=5.0)
    avg: dict[str, float] = {}
    batches = batch_stream(train_set, cfg, trainer.global_step, end)
    try:
        while trainer.global_step < end and not stop.requested:
            t0 = time.perf_counter()
            res = trainer.step(next(batches))
            res.losses["step_s"] = time.perf_counter() - t0
            for k, v in res.losses.items():
                avg[k] = v if k not in avg else 0.95 * avg[k] + 0.05 * v
            s = trainer.global_step
            bar.update(1)
            bar.set_postfix(loss=f"{avg['total']:.4f}", l1=f"{avg['l1']:.4f}")
            if s % cfg.log_every == 0:  # running means: terms computed every n-th step show up too
                for k, v in avg.items():
                    writer.add_scalar(f"train/{k}", v, s)
            if s % (10 * cfg.log_every) == 0:
                log.info("step %d: %s", s, " ".join(f"{k}={v:.4g}" for k, v in sorted(avg.items())))
            if dev_set is not None and s % cfg.dev_every == 0:
                dev = dev_metrics(trainer.generator, dev_set, cfg.dev_pairs, trainer.device)
                for k, v in dev.items():
                    writer.add_scalar(f"dev/{k}", v, s)
                log.info("dev at step %d: %s", s, " ".join(f"{k}={v:.4g}" for k, v in sorted(dev.items())))
            if dev_set is not None and s % cfg.image_every == 0:
                b = to_device(collate([dev_set.sample(i) for i in range(min(4, len(dev_set)))]), trainer.device)
                with torch.no_grad():
                    trainer.generator.eval()
                    pred = b.warped + trainer.generator(b.source, b.warped, b.drawing, b.gate).delta
                    trainer.generator.train()
                writer.add_image("dev/source|analytic|trained|target", image_grid(b, pred), s)
            if time.monotonic() - last_save > 60 * cfg.checkpoint_minutes:
                _checkpoint(trainer, run_dir, cfg)
                last_save = time.monotonic()
            if s % cfg.keep_every == 0:
                _checkpoint(trainer, run_dir, cfg, keep=True)
    finally:
        _checkpoint(trainer, run_dir, cfg)
        writer.close()
        bar.close()
    return run_dir


def _pair_sets(cfg: TrainConfig, progress: bool) -> tuple[PairDataset, PairDataset | None]:
    """The train and dev pair sets: a ready store (``cfg.pairs_dir``) or built from the data set."""
    if cfg.pairs_dir:
        root = Path(cfg.pairs_dir).expanduser()
        dev = PairDataset(root / "dev") if (root / "dev" / "plan.npy").exists() else None
        return PairDataset(root / "train", cfg.augment), dev
    data_dir, cache_dir = Path(cfg.data_dir).expanduser(), Path(cfg.cache_dir).expanduser()
    build_landmark_cache(data_dir, cache_dir, ("train",), progress=progress)
    train_root = build_pairs(data_dir, cache_dir, cfg.pairs, "train", progress=progress)
    dev_root = build_pairs(data_dir, cache_dir, cfg.pairs, "dev", progress=progress)
    return PairDataset(train_root, cfg.augment), PairDataset(dev_root)


def _shipped_file(name: str, warp_version: int) -> Path:
    """The shipped weights file of generator ``name`` for the warp its run trains on (``<name>.pt`` if none ships)."""
    return shipped_weights_path(name, warp_version) if generator_spec(name).weights else WEIGHTS_DIR / f"{name}.pt"


def _init_from_weights(trainer: Trainer, weights: str) -> None:
    """Start the generator from a weights file ("shipped" = the committed one for the run's warp) and continue
    its step count."""
    warp = trainer.cfg.pairs.warp_version
    if weights == "shipped":
        path = _shipped_file(trainer.cfg.model.name, warp)
        model = load_generator(path=path, expected=contract_for(warp))
    else:
        path = Path(weights).expanduser()
        model = load_generator(path=path)
    trainer.generator.load_state_dict(model.state_dict())
    meta = torch.load(path, map_location="cpu", weights_only=True).get("meta", {})
    trainer.global_step = int(meta.get("step", 0))
    log.info("no checkpoint: generator initialised from %s (step %d); optimiser and discriminator start anew",
             path, trainer.global_step)


def _checkpoint(trainer: Trainer, run_dir: Path, cfg: TrainConfig, keep: bool = False) -> None:
    trainer.save(run_dir / CHECKPOINT)
    if keep:
        trainer.save(run_dir / f"checkpoint_{trainer.global_step:07d}.pt")
    save_weights(trainer.generator, run_dir / "weights_latest.pt", cfg.model.name,
                 {"step": trainer.global_step, "run": cfg.name}, contract_for(cfg.pairs.warp_version))
    log.info("checkpoint at step %d", trainer.global_step)


def ship_weights(run_dir: Path, dest: Path | None = None) -> tuple[Path, str, int]:
    """Write the generator of a run's checkpoint as small fp16 weights (default: the shipped file).

    Returns (path, sha256, step).
    """
    state = torch.load(Path(run_dir) / CHECKPOINT, map_location="cpu", weights_only=False)
    name = state["config"]["model"]["name"]
    spec = generator_spec(name)
    model = Refiner(spec.config)
    model.load_state_dict(state["generator"])
    warp = int(state["config"]["pairs"]["warp_version"])
    dest = dest or _shipped_file(name, warp)  # a run on the squashing warp ships beside, not over, the default
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = save_weights(model, dest, name, {"step": int(state["step"]), "run": state["config"]["name"]},
                          contract_for(warp))
    return dest, digest, int(state["step"])
