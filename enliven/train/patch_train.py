"""Training the eye and mouth patch refiners (models/patches.py) on self-reenactment patches at 512.

Pairs: as for the face refiner (``dataset.plan_pairs``: source and driver of one clip of a train person,
the source's crop transform, the driver's crop as ground truth) but at 512 px, from clips whose frames are
at least ``min_frame_px`` (upsampled 256 px clips teach nothing at 512), with drivers weighted to blinks
and open mouths. The patch refiner's input is what it gets at inference: the analytic warp refined by
the shipped face refiner (ONNX Runtime), at 512. Eye patches (both eyes) at ``eye_px``, the mouth
patch at ``mouth_px``, each with its source twin, landmark drawing, gate and valid mask, are stored
as .npy memory maps under ``<cache>/patch_pairs/<digest>/<train|dev>/`` (resumable, clip by clip).

Training: L1 weighted by (0.1 + gate) x valid plus 0.5 x (1 - MS-SSIM), Adam; checkpoints every few
minutes under ``<runs>/<name>/`` (``checkpoint.pt`` resumes exactly; ``weights_latest.pt`` and
``weights_best.pt``, the best on dev so far, are weights files for ``models.patches.load_patch_refiner``); a held-out (dev people) L1 in ``log.jsonl``.

    nice -n 19 python -m enliven.train.patch_train --kind eye   # or --kind mouth; again = resume
    # pairs on the squashing warp: --warp 4; a new run from other weights: --run NAME --init FILE
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..engine.compose import crop_transform
from ..engine.contract import contract_for
from ..engine.patches import extract, patch_gate, patch_inputs
from ..engine.refine import (
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    GeneratorRunner,
)
from ..engine.runtime import TorchModel
from ..engine.warp import LID_SLIDE_WARP_VERSION, SQUASH_WARP_VERSION, WARP_VERSION, Warper
from ..models.generator import create_generator, load_generator, save_weights
from .cache import (
    DEFAULT_CACHE_DIR,
    DEFAULT_DATA_DIR,
    load_clip_landmarks,
    read_manifest,
)
from .dataset import PairConfig, _person_split, plan_pairs, read_frames, self_reenact
from .loop import _Stop
from .losses import masked_l1, ms_ssim

TEACHER_REFINER = "refiner128"  # the face refiner the patch pairs are refined by

log = logging.getLogger(__name__)

KINDS = {"eye": ("right_eye", "left_eye"), "mouth": ("mouth",)}


@dataclass(frozen=True)
class PatchPairConfig:
    crop_px: int = 512  # the crop the warp and the face refiner run at
    eye_px: int = 64  # eye patch side
    mouth_px: int = 96  # mouth patch side
    min_frame_px: int = 400  # only clips whose frames are at least this big (shorter side)
    pairs_per_person: int = 60  # pairs drawn per person
    mouth_open_share: float = 0.45  # drivers whose mouth opens wider than the source's
    blink_share: float = 0.4  # drivers with (nearly) closed eyes
    seed: int = 0
    warp_version: int = WARP_VERSION  # the analytic warp (and the shipped face refiner trained behind it)

    def digest(self) -> str:
        d = asdict(self)
        if d["warp_version"] == SQUASH_WARP_VERSION:
            del d["warp_version"]  # stores made before the field existed were all on the squashing warp
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


# --- pairs ---------------------------------------------------------------------------------------------------

def build_patch_pairs(data_dir: Path, cache_dir: Path, cfg: PatchPairConfig, subset: str = "train") -> Path:
    """Make (or complete) the patch pair store of ``subset`` ("train" or "dev" people of the train split)."""
    root = Path(cache_dir) / "patch_pairs" / cfg.digest() / subset
    if (root / "done.json").exists():
        return root
    rows = read_manifest(data_dir, "clip", "train")
    clips = [load_clip_landmarks(cache_dir, r) for r in rows]
    pair_cfg = replace(PairConfig(), crop_px=cfg.crop_px, mouth_open_share=cfg.mouth_open_share,
                       blink_share=cfg.blink_share, seed=cfg.seed, warp_version=cfg.warp_version)
    warp = pair_cfg.warp_config()  # raises for a warp no face refiner ships for
    train_people, dev_people = _person_split(clips, pair_cfg.dev_people, pair_cfg.seed)  # same split as the refiner
    people = train_people if subset == "train" else dev_people
    per_person = cfg.pairs_per_person if subset == "train" else max(cfg.pairs_per_person // 4, 8)
    keep = [i for i, c in enumerate(clips) if min(c.size) >= cfg.min_frame_px]
    plans = plan_pairs([clips[i] for i in keep], people, pair_cfg, per_person)
    plans = [p._replace(clip=keep[p.clip]) for p in plans]
    n = len(plans)
    root.mkdir(parents=True, exist_ok=True)
    (root.parent / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    progress_file = root / "progress.json"
    start = json.loads(progress_file.read_text())["next_clip"] if progress_file.exists() else 0
    mode = "r+" if start > 0 else "w+"
    stores = {}
    for group, kinds in KINDS.items():
        side = cfg.eye_px if group == "eye" else cfg.mouth_px
        m = n * len(kinds)
        stores[group] = {f: np.lib.format.open_memmap(root / f"{group}_{f}.npy", mode, np.uint8, (m, side, side, 3))
                         for f in ("warped", "source", "target", "drawing")}
        stores[group]["valid"] = np.lib.format.open_memmap(root / f"{group}_valid.npy", mode, np.uint8,
                                                           (m, side, side))
    np.save(root / "plan.npy", np.array([(p.clip, p.source, p.driver, p.kind) for p in plans], np.int32).reshape(-1, 4))
    by_clip: dict[int, list[int]] = {}
    for i, p in enumerate(plans):
        by_clip.setdefault(p.clip, []).append(i)
    clip_ids = sorted(by_clip)
    # The face refiner the shipped patches were trained behind (refiner128 of that warp, in torch; its distilled
    # student, which the live server runs, gives nearly the same crops: weights/refiner128s.md).
    face = load_generator(TEACHER_REFINER, expected=contract_for(cfg.warp_version))
    runner = GeneratorRunner(TorchModel(face.encoder, ENCODER_INPUTS, ENCODER_OUTPUTS, threads=1),
                             TorchModel(face.decoder, DECODER_INPUTS, DECODER_OUTPUTS, threads=1),
                             face.config.resolution_px)
    s_px = cfg.crop_px
    for k in range(start, len(clip_ids)):
        ci = clip_ids[k]
        clip = clips[ci]
        items = by_clip[ci]
        frames = read_frames(Path(data_dir) / clip.row.file, {plans[i].source for i in items}
                              | {plans[i].driver for i in items})
        for i in items:
            p = plans[i]
            if p.source not in frames or p.driver not in frames:
                continue
            t = crop_transform(clip.points[p.source], s_px)
            warper = Warper(t.points_to_crop(clip.points[p.source]), s_px, warp)
            smp = self_reenact(frames[p.source], clip.points[p.source], frames[p.driver], clip.points[p.driver], t,
                               warper)
            runner.prepare(smp.source)
            refined = runner.refine(smp.analytic, smp.driven_points)
            for group, kinds in KINDS.items():
                side = cfg.eye_px if group == "eye" else cfg.mouth_px
                for j, kind in enumerate(kinds):
                    row = i * len(kinds) + j
                    inp = patch_inputs(refined, smp.driven_points, smp.source, smp.source_points, kind, side)
                    st = stores[group]
                    st["warped"][row], st["source"][row], st["drawing"][row] = inp.warped, inp.source, inp.drawing
                    st["target"][row] = extract(smp.target, inp.transform)
                    st["valid"][row] = extract(smp.valid, inp.transform)
        for st in stores.values():
            for a in st.values():
                a.flush()
        progress_file.write_text(json.dumps({"next_clip": k + 1}))
        log.info("patch pairs (%s): clip %d/%d %s", subset, k + 1, len(clip_ids), clip.row.file)
    (root / "done.json").write_text(json.dumps({"pairs": n}))
    return root


class PatchBatch(NamedTuple):
    """Patches (N, C, P, P) float32 in [0, 1]."""

    warped: torch.Tensor
    source: torch.Tensor
    target: torch.Tensor
    drawing: torch.Tensor
    gate: torch.Tensor  # (N, 1, P, P)
    weight: torch.Tensor  # (N, 1, P, P): (0.1 + gate) x valid


class PatchStore:
    """The patches of one group ("eye" or "mouth") of a store folder."""

    def __init__(self, root: Path, group: str) -> None:
        self.arrays = {f: np.load(Path(root) / f"{group}_{f}.npy", mmap_mode="r")
                       for f in ("warped", "source", "target", "drawing", "valid")}
        # rows never written (undecodable frames) are all zero: skip them
        self.indices = np.flatnonzero(np.asarray(self.arrays["valid"][:, ::8, ::8]).reshape(len(self.arrays["valid"]), -1)
                                      .any(axis=1))

    def __len__(self) -> int:
        return len(self.indices)

    def batch(self, rows: np.ndarray, rng: np.random.Generator | None = None) -> PatchBatch:
        """The patches of ``rows`` (positions in ``indices``); flipped / made grey at random when rng is given."""
        idx = np.sort(self.indices[rows])
        imgs = {f: np.stack([np.asarray(self.arrays[f][j]) for j in idx]) for f in ("warped", "source", "target",
                                                                                   "drawing")}
        valid = np.stack([np.asarray(self.arrays["valid"][j]) for j in idx]).astype(np.float32)[:, None] / 255.0
        if rng is not None:
            flip = rng.random(len(idx)) < 0.5
            for v in imgs.values():
                v[flip] = v[flip][:, :, ::-1]
            valid[flip] = valid[flip][..., ::-1]
        t = {f: torch.from_numpy(np.ascontiguousarray(v)).permute(0, 3, 1, 2).float() / 255.0 for f, v in imgs.items()}
        if rng is not None:
            grey = torch.from_numpy(rng.random(len(idx)) < 0.1)
            for f in ("warped", "source", "target"):
                g = t[f].mean(dim=1, keepdim=True).expand_as(t[f])
                t[f] = torch.where(grey.view(-1, 1, 1, 1), g, t[f])
        side = valid.shape[-1]
        gate = torch.from_numpy(patch_gate(side))[None, None].expand(len(idx), 1, side, side).contiguous()
        weight = (0.1 + gate) * torch.from_numpy(np.ascontiguousarray(valid))
        return PatchBatch(t["warped"], t["source"], t["target"], t["drawing"], gate, weight)


def synthetic_patch_batch(side_px: int, n: int, seed: int = 0) -> PatchBatch:
    """A learnable batch for tests: the target is the warp darkened in a disc at the patch's centre."""
    g = torch.Generator().manual_seed(seed)
    warped = torch.rand(n, 3, side_px, side_px, generator=g) * 0.2 + 0.5
    yy, xx = torch.meshgrid(torch.arange(side_px), torch.arange(side_px), indexing="ij")
    disc = (((xx - side_px / 2) ** 2 + (yy - side_px / 2) ** 2) < (side_px / 5) ** 2).float()
    target = warped - 0.3 * disc
    gate = torch.from_numpy(patch_gate(side_px))[None, None].expand(n, 1, side_px, side_px).contiguous()
    return PatchBatch(warped, warped.clone(), target, torch.zeros_like(warped), gate, 0.1 + gate)


# --- the trainer --------------------------------------------------------------------------------------------------

class PatchTrainer:
    """A patch refiner and its optimiser; ``step(batch)``, ``save``/``load`` (exact resume)."""

    def __init__(self, name: str, lr: float = 2e-4, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.name = name
        self.model = create_generator(name)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr, betas=(0.5, 0.999))
        self.step_count = 0

    def loss(self, b: PatchBatch) -> torch.Tensor:
        out = b.warped + self.model(b.warped, b.source, b.drawing, b.gate).delta
        return masked_l1(out, b.target, b.weight) + 0.5 * (1 - ms_ssim(out.clamp(0, 1), b.target, b.weight))

    def step(self, b: PatchBatch) -> float:
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(b)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.step_count += 1
        return float(loss.detach())

    def save(self, path: Path) -> None:
        tmp = Path(path).with_suffix(".tmp")
        torch.save({"model": self.model.state_dict(), "opt": self.opt.state_dict(), "step": self.step_count,
                    "name": self.name}, tmp)
        tmp.replace(path)

    def load(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.step_count = int(state["step"])


def dev_l1(model: torch.nn.Module, store: PatchStore, count: int = 128) -> dict[str, float]:
    """Gate-weighted L1 of the input (the face-refined crop) and of the patch refiner's output on dev patches."""
    rows = np.arange(min(count, len(store)))
    sums = {"input": 0.0, "patch": 0.0}
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), 32):
            b = store.batch(rows[start:start + 32])
            out = (b.warped + model(b.warped, b.source, b.drawing, b.gate).delta).clamp(0, 1)
            w = b.gate * b.weight.gt(0).float()
            sums["input"] += float(masked_l1(b.warped, b.target, w))
            sums["patch"] += float(masked_l1(out, b.target, w))
    n = max(1, (len(rows) + 31) // 32)
    return {k: v / n for k, v in sums.items()}


def train(kind: str, steps: int, batch_size: int = 32, lr: float = 2e-4, threads: int = 1,
          data_dir: Path = DEFAULT_DATA_DIR, cache_dir: Path = DEFAULT_CACHE_DIR, minutes_per_checkpoint: float = 5.0,
          pairs: PatchPairConfig = PatchPairConfig(), run: str | None = None, init: Path | None = None) -> Path:
    """Build the pairs if needed, then train (or resume) the ``kind`` ("eye" or "mouth") patch refiner.

    ``run``: the run folder's name (default: the generator's name, then "-warp<N>" off the default warp);
    ``init``: a patch weights file to start a new run from (any warp: fine-tuning across warps).
    """
    torch.set_num_threads(threads)
    name = "patch-eye64" if kind == "eye" else "patch-mouth96"
    contract = contract_for(pairs.warp_version)
    if run is None:
        run = name if pairs.warp_version == WARP_VERSION else f"{name}-warp{pairs.warp_version}"
    run_dir = Path(cache_dir) / "runs" / run
    run_dir.mkdir(parents=True, exist_ok=True)
    train_store = PatchStore(build_patch_pairs(data_dir, cache_dir, pairs, "train"), kind)
    dev_store = PatchStore(build_patch_pairs(data_dir, cache_dir, pairs, "dev"), kind)
    trainer = PatchTrainer(name, lr)
    ckpt = run_dir / "checkpoint.pt"
    if ckpt.exists():
        trainer.load(ckpt)
        log.info("resumed %s at step %d", ckpt, trainer.step_count)
    elif init is not None:
        blob = torch.load(init, map_location="cpu", weights_only=True)  # its own contract is not checked: fine-tuning
        trainer.model.load_state_dict({k: v.float() if v.is_floating_point() else v
                                       for k, v in blob["state_dict"].items()})
        log.info("started %s from %s", run, init)
    log_file = run_dir / "log.jsonl"
    last = time.monotonic()
    avg = None
    best = min((json.loads(line)["dev_l1_patch"] for line in log_file.read_text().splitlines()),
               default=float("inf")) if log_file.exists() else float("inf")

    def save(file: str, **meta: object) -> None:
        save_weights(trainer.model, run_dir / file, name,  # type: ignore[arg-type]
                     {"step": trainer.step_count, **meta, "pairs": asdict(pairs),
                      "init": str(init) if init else None}, contract)

    def checkpoint() -> None:
        trainer.save(ckpt)
        save("weights_latest.pt")

    stop = _Stop()  # SIGTERM / SIGINT: checkpoint, then exit
    try:
        while trainer.step_count < steps and not stop.requested:
            rng = np.random.default_rng([pairs.seed, trainer.step_count])
            rows = rng.choice(len(train_store), size=min(batch_size, len(train_store)), replace=False)
            loss = trainer.step(train_store.batch(rows, rng))
            avg = loss if avg is None else 0.95 * avg + 0.05 * loss
            if trainer.step_count % 250 == 0:
                rec = {"step": trainer.step_count, "loss": avg, "time": time.time(), **{
                    f"dev_l1_{k}": v for k, v in dev_l1(trainer.model, dev_store).items()}}
                with open(log_file, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                log.info("%s", rec)
                if rec["dev_l1_patch"] < best:
                    best = rec["dev_l1_patch"]
                    save("weights_best.pt", dev_l1_patch=best)
            if time.monotonic() - last > 60 * minutes_per_checkpoint:
                checkpoint()
                last = time.monotonic()
    finally:
        checkpoint()
    return run_dir


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ap = argparse.ArgumentParser(description="Train the eye or mouth patch refiner (resumes its checkpoint).")
    ap.add_argument("--kind", choices=sorted(KINDS), required=True)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE_DIR)
    ap.add_argument("--warp", type=int, default=WARP_VERSION,
                    choices=(WARP_VERSION, LID_SLIDE_WARP_VERSION, SQUASH_WARP_VERSION),
                    help="the analytic warp the pairs are made on (and the face refiner behind it)")
    ap.add_argument("--run", help="run folder name (default: the refiner's name, -warp<N> off the default warp)")
    ap.add_argument("--init", type=Path, help="patch weights to start a new run from (e.g. one of another warp)")
    ap.add_argument("--pairs-only", action="store_true", help="build the pair stores and stop")
    a = ap.parse_args(argv)
    pairs = PatchPairConfig(warp_version=a.warp)
    if a.pairs_only:
        for subset in ("train", "dev"):
            print(build_patch_pairs(a.data, a.cache, pairs, subset))
        return 0
    print(train(a.kind, a.steps, a.batch, data_dir=a.data, cache_dir=a.cache, pairs=pairs, run=a.run, init=a.init))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
