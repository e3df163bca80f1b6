"""Distil the shipped face refiner into a cheaper decoder of the same inputs and outputs.

The student (``GeneratorConfig(top="shuffle")``, generator ``refiner128s``) keeps every layer of the
teacher's decoder below its top level (copied, then fine-tuned) and the teacher's source encoder
(copied and frozen: the photo's code is the same), and replaces the top level, which runs at the full
128 px with 12 channels, by a 6x6 stride-2 stem and a block at 64 px whose head unfolds to 128 px.
Training pairs are the refiner's own (the pair store of ``enliven train``); the loss is the region-
weighted L1 between the student's and the teacher's refined images and masks, so the student learns
what the teacher does, including where the teacher leaves the warp alone.

Two phases: first only the new layers learn (the stem also to reproduce the teacher's level-1
features, so the copied layers see what they were trained on), then the whole decoder at a lower rate.
Checkpointed (``checkpoint.pt`` in the run folder, resumed on restart); ``weights_best.pt`` is kept
at the dev check with the smallest student-teacher distance.

    python -m enliven.train.distill --pairs ~/.cache/enliven/pairs/65662e75e4 --steps 3000
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ..engine.contract import contract_for
from ..engine.warp import WARP_VERSION
from ..models.generator import GeneratorConfig, Refiner, load_generator, save_weights
from .config import DEFAULT_CACHE_DIR
from .dataset import AugmentConfig, Batch, PairDataset, collate
from .loop import seeded_batch

log = logging.getLogger(__name__)

STUDENT = "refiner128s"


def new_layers(cfg: GeneratorConfig) -> tuple[str, ...]:
    """Parameter name prefixes (of the decoder) of the student's own layers; the rest is copied from the teacher."""
    top = len(cfg.widths) - 1  # the up block and FiLM of the top level come last
    return ("stem.", f"up.{top}.", f"films.{top + 1}.", "head.")


@dataclass(frozen=True)
class DistillConfig:
    pairs_dir: str
    run_dir: str = str(Path(DEFAULT_CACHE_DIR).expanduser() / "runs" / "refiner128s")
    steps: int = 3000
    new_layers_steps: int = 600  # phase 1: only the new layers learn
    batch_size: int = 16
    lr_new: float = 1e-3
    lr_all: float = 2e-4
    feature_weight: float = 1.0  # phase 1: the stem's output against the teacher's level-1 features
    mask_weight: float = 0.25
    gt_weight: float = 0.0  # from gt_from on: + this x the region-weighted L1 to the real frame (the pairs' target)
    gt_from: int = 0
    dev_every: int = 250
    dev_pairs: int = 160
    seed: int = 0
    threads: int = 2
    warp_version: int = WARP_VERSION
    teacher: str = ""  # a weights file of the teacher ("": the shipped refiner of warp_version)
    init: str = ""  # with no checkpoint yet: the student's decoder from this student weights file, new layers
    # included (a student of an earlier teacher, carried to a new warp); the encoder is always the teacher's


def student_from(teacher: Refiner) -> Refiner:
    """A student whose encoder and shared decoder layers are the teacher's (new layers freshly initialised)."""
    torch.manual_seed(0)
    student = Refiner(replace(teacher.config, top="shuffle"))
    student.encoder.load_state_dict(teacher.encoder.state_dict())
    theirs = teacher.decoder.state_dict()
    mine = student.decoder.state_dict()
    for k in mine:
        if not k.startswith(new_layers(student.config)) and k in theirs and theirs[k].shape == mine[k].shape:
            mine[k] = theirs[k].clone()
    student.decoder.load_state_dict(mine)
    for p in student.encoder.parameters():
        p.requires_grad_(False)
    return student


def teacher_level1(teacher: Refiner, warped: torch.Tensor, drawing: torch.Tensor) -> torch.Tensor:
    """The teacher decoder's features entering its level-1 block (N, widths[1], R/2, R/2)."""
    d = teacher.decoder
    return d.down[0](d.stem(torch.cat([warped * 2 - 1, drawing * 2 - 1], dim=1)))


def distill_loss(student: Refiner, teacher: Refiner, b: Batch, code: torch.Tensor, cfg: DistillConfig,
                 phase1: bool, gt_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Region-weighted L1 of refined images and masks against the teacher's (+ the stem's features in phase 1,
    + ``gt_weight`` x the region-weighted L1 of the refined image to the real frame)."""
    with torch.no_grad():
        t = teacher.decoder(b.warped, b.drawing, b.gate, code)
        t_feat = teacher_level1(teacher, b.warped, b.drawing) if phase1 else None
    s = student.decoder(b.warped, b.drawing, b.gate, code)
    w = b.weight
    img = ((s.delta - t.delta).abs() * w).sum() / (w.sum() * 3).clamp_min(1)
    mask = ((s.mask - t.mask).abs() * b.gate).sum() / b.gate.sum().clamp_min(1)
    loss = img + cfg.mask_weight * mask
    parts = {"img_l1": img.item(), "mask_l1": mask.item()}
    if gt_weight > 0:
        gt = (((b.warped + s.delta).clamp(0, 1) - b.target).abs() * w).sum() / (w.sum() * 3).clamp_min(1)
        loss = loss + gt_weight * gt
        parts["gt_l1"] = gt.item()
    if phase1:
        feat = F.l1_loss(student.decoder.stem(torch.cat([b.warped * 2 - 1, b.drawing * 2 - 1], dim=1)), t_feat)
        loss = loss + cfg.feature_weight * feat
        parts["feat_l1"] = feat.item()
    return loss, parts


@torch.no_grad()
def dev_check(student: Refiner, teacher: Refiner, dev: PairDataset, count: int) -> dict[str, float]:
    """Student-teacher distance and both models' face PSNR against the real frames on the first dev pairs."""
    sums: dict[str, float] = {}
    batches = 0
    student.eval()
    for start in range(0, min(count, len(dev)), 16):
        b = collate([dev.sample(i) for i in range(start, min(start + 16, count, len(dev)))])
        code = teacher.encoder(b.source)
        face = b.regions[:, :1] * b.valid
        outs = {"teacher": teacher.decoder(b.warped, b.drawing, b.gate, code),
                "student": student.decoder(b.warped, b.drawing, b.gate, code)}
        for name, o in outs.items():
            img = (b.warped + o.delta).clamp(0, 1)
            mse = ((img - b.target) ** 2 * face).sum((1, 2, 3)) / (face.sum((1, 2, 3)) * 3).clamp_min(1)
            sums[f"{name}_face_psnr"] = sums.get(f"{name}_face_psnr", 0.0) + float(
                (10 * torch.log10(1 / mse.clamp_min(1e-10))).mean())
        gap = ((outs["student"].delta - outs["teacher"].delta).abs() * face).sum() / (face.sum() * 3).clamp_min(1)
        sums["gap_face_l1"] = sums.get("gap_face_l1", 0.0) + float(gap)
        batches += 1
    student.train()
    return {k: v / max(batches, 1) for k, v in sums.items()}


def run(cfg: DistillConfig, teacher: Refiner | None = None) -> Path:
    """Train (or resume) the student of ``teacher`` (default: the shipped refiner of the pairs' warp);
    returns the run folder."""
    torch.set_num_threads(cfg.threads)
    run_dir = Path(cfg.run_dir).expanduser()
    run_dir.mkdir(parents=True, exist_ok=True)
    if teacher is None:
        teacher = (load_generator(path=Path(cfg.teacher).expanduser(), expected=contract_for(cfg.warp_version))
                   if cfg.teacher else load_generator(expected=contract_for(cfg.warp_version)))
    teacher = teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = student_from(teacher)
    root = Path(cfg.pairs_dir).expanduser()
    augment = AugmentConfig()
    train, dev = PairDataset(root / "train", augment), PairDataset(root / "dev")
    new = [p for k, p in student.decoder.named_parameters() if k.startswith(new_layers(student.config))]
    opt = torch.optim.Adam(new, lr=cfg.lr_new, betas=(0.9, 0.999))
    step, best = 0, float("inf")
    ckpt = run_dir / "checkpoint.pt"
    if cfg.init and not ckpt.exists():  # a carried student: its decoder, and no new-layers phase
        start = load_generator(path=Path(cfg.init).expanduser())  # trained behind another warp: no contract check
        student.decoder.load_state_dict(start.decoder.state_dict())
        log.info("student decoder from %s", cfg.init)
        step = cfg.new_layers_steps
        opt = torch.optim.Adam(student.decoder.parameters(), lr=cfg.lr_all)
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        student.load_state_dict(state["student"])
        step, best = int(state["step"]), float(state["best"])
        if step >= cfg.new_layers_steps:
            opt = torch.optim.Adam(student.decoder.parameters(), lr=cfg.lr_all)
        opt.load_state_dict(state["opt"])
        for group in opt.param_groups:  # the rate of this run's config, not the checkpoint's
            group["lr"] = cfg.lr_all if step >= cfg.new_layers_steps else cfg.lr_new
        log.info("resumed at step %d (best dev gap %.5f)", step, best)
    history = run_dir / "dev.jsonl"
    t0 = time.perf_counter()
    while step < cfg.steps:
        if step == cfg.new_layers_steps:
            opt = torch.optim.Adam(student.decoder.parameters(), lr=cfg.lr_all)
        b = seeded_batch(train, cfg.batch_size, cfg.seed, augment, step)
        with torch.no_grad():
            code = teacher.encoder(b.source)
        loss, parts = distill_loss(student, teacher, b, code, cfg, step < cfg.new_layers_steps,
                                   cfg.gt_weight if step >= cfg.gt_from else 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.decoder.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            log.info("step %d loss %.5f %s (%.2f s/step)", step, float(loss),
                     " ".join(f"{k} {v:.5f}" for k, v in parts.items()), (time.perf_counter() - t0) / 50)
            t0 = time.perf_counter()
        if step % cfg.dev_every == 0 or step == cfg.steps:
            dev_row = {"step": step, **dev_check(student, teacher, dev, cfg.dev_pairs)}
            with history.open("a") as f:
                f.write(json.dumps(dev_row) + "\n")
            log.info("dev %s", dev_row)
            meta = {"step": step, "run": f"distill {cfg.teacher or 'the shipped refiner128'}", "teacher": "refiner128"}
            save_weights(student, run_dir / "weights_latest.pt", STUDENT, meta, contract_for(cfg.warp_version))
            if dev_row["gap_face_l1"] < best:
                best = dev_row["gap_face_l1"]
                save_weights(student, run_dir / "weights_best.pt", STUDENT, meta, contract_for(cfg.warp_version))
            torch.save({"student": student.state_dict(), "opt": opt.state_dict(), "step": step, "best": best,
                        "config": cfg.__dict__}, ckpt)
    return run_dir


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", required=True, help="a pair store with train/ and dev/ (warp 5)")
    p.add_argument("--run", default=DistillConfig.run_dir, help="run folder (checkpoints, dev history, weights)")
    p.add_argument("--steps", type=int, default=DistillConfig.steps)
    p.add_argument("--threads", type=int, default=DistillConfig.threads)
    p.add_argument("--gt-weight", type=float, default=0.0, help="weight of the L1 to the real frames (0: pure distillation)")
    p.add_argument("--gt-from", type=int, default=0, help="the step from which that term counts")
    p.add_argument("--lr-all", type=float, default=DistillConfig.lr_all, help="learning rate of phase 2")
    p.add_argument("--warp", type=int, default=DistillConfig.warp_version, help="the pairs' (and teacher's) warp version")
    p.add_argument("--teacher", default="", help="the teacher's weights file (default: the shipped refiner of --warp)")
    p.add_argument("--init", default="", help="start the student from this student weights file (skips phase 1)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    run(DistillConfig(pairs_dir=a.pairs, run_dir=a.run, steps=a.steps, threads=a.threads, gt_weight=a.gt_weight,
                      gt_from=a.gt_from, lr_all=a.lr_all, warp_version=a.warp, teacher=a.teacher, init=a.init))


if __name__ == "__main__":
    main()
