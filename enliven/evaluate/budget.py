"""Where the trained mode's remaining error lies on val, and how much of it a landmark-driven engine can reach.

``enliven evaluate`` says how large the error is; this says where it is and what kind it is, so work
goes where it can pay. On self-reenactment frames of the val split (the trained mode, as evaluated):

- **shares of the face's squared error** by region: both eyes, the mouth, a band along the face
  outline (``BORDER_FRACTION`` of the crop wide) and the rest of the face, beside each region's
  share of the face's area;
- **oracles**, each the PSNR the output would reach with one kind of error taken away using the
  ground truth: the frame's colour offset (the per-channel mean difference inside the face: lighting
  and exposure that change across a clip, which a driver given as landmarks does not carry), and a
  light blur (what hedging on misplaced fine detail would gain, a measure of misalignment, not a
  product setting);
- on **open-mouth frames** (``regions.is_open_mouth``): the mouth L1 of ``enliven evaluate``, the share
  of it inside the inner lips (teeth, tongue, cavity: what the photo often does not show), and the
  mouth L1 with that interior taken from the ground truth.

    python -m enliven.evaluate.budget [--frames 10] [--out benchmarks/quality/error_budget.json]

Images are (S, S, 3) uint8 RGB, masks (S, S) float64 in [0, 1].
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from ..engine.contract import contract_for
from ..engine.refine import GeneratorRunner
from ..engine.warp import WarpConfig
from ..export.runner import open_runner
from ..train.cache import build_landmark_cache
from ..train.dataset import read_frames
from .config import EvalConfig, EvalPaths
from .metrics import face_mask, psnr
from .regions import (
    eye_region,
    inner_mouth_region,
    masked_l1,
    mouth_region,
    region_samples,
)
from .self_reenact import StageTimings, plan_clip, reenact_clip

BORDER_FRACTION = 0.03  # width of the face-outline band, fraction of the crop side
BLUR_SIGMA = 0.7  # pixels at 256; scaled with the crop
REGIONS = ("eyes", "mouth", "outline", "rest")


def offset_oracle(output: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``output`` with the per-channel mean difference to ``truth`` inside ``mask`` (weights) removed, uint8."""
    w = mask[..., None]
    shift = ((truth.astype(np.float64) - output) * w).sum((0, 1)) / max(float(mask.sum()), 1e-9)
    return np.clip(np.round(output + shift), 0, 255).astype(np.uint8)


def interior_oracle(output: np.ndarray, truth: np.ndarray, interior: np.ndarray) -> np.ndarray:
    """``output`` with the pixels of ``interior`` (weights) taken from ``truth``, uint8."""
    w = interior[..., None]
    return np.round(output * (1 - w) + truth.astype(np.float64) * w).astype(np.uint8)


def face_regions(points: np.ndarray, valid: np.ndarray, size_px: int) -> dict[str, np.ndarray]:
    """The face (driven landmarks' oval, on-frame pixels) split into REGIONS, masks summing to the face mask.

    Eyes and mouth as ``regions`` grows them (where they overlap, the eyes count); the outline band is
    the face minus the face eroded by ``BORDER_FRACTION`` of the side; the rest is what is left.
    """
    face = face_mask(points, size_px) * valid
    width = max(1, round(BORDER_FRACTION * size_px))
    core = cv2.erode((face > 0.5).astype(np.uint8), np.ones((2 * width + 1, 2 * width + 1), np.uint8))
    eyes = np.minimum(eye_region(points, size_px), face)
    mouth = np.minimum(mouth_region(points, size_px), face - eyes)
    outline = np.minimum(face * (1 - core), face - eyes - mouth)
    return {"eyes": eyes, "mouth": mouth, "outline": outline, "rest": face - eyes - mouth - outline}


def squared_error_shares(output: np.ndarray, truth: np.ndarray, regions: dict[str, np.ndarray]) -> dict[str, float]:
    """Each region's sum of squared error (mean over channels, [0, 1] units) and area, as plain sums."""
    se = ((output.astype(np.float64) - truth) / 255.0) ** 2
    se = se.mean(-1)
    out = {}
    for name, m in regions.items():
        out[f"se_{name}"] = float((se * m).sum())
        out[f"area_{name}"] = float(m.sum())
    return out


def face_budget(output: np.ndarray, truth: np.ndarray, points: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """One self-reenactment frame: face PSNR, its oracles, and the regions' squared-error sums."""
    size = output.shape[0]
    regions = face_regions(points, valid, size)
    face = sum(regions.values())
    blurred = cv2.GaussianBlur(output, (0, 0), BLUR_SIGMA * size / 256)
    return {"psnr_face": psnr(output, truth, face),
            "psnr_face_offset_oracle": psnr(offset_oracle(output, truth, face), truth, face),
            "psnr_face_blur": psnr(blurred, truth, face),
            **squared_error_shares(output, truth, regions)}


def mouth_budget(output: np.ndarray, truth: np.ndarray, points: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """One open-mouth frame: mouth L1 (as ``enliven evaluate``), its part inside the inner lips, and the oracle."""
    size = output.shape[0]
    mouth = mouth_region(points, size) * valid
    interior = np.minimum(inner_mouth_region(points, size) * valid, mouth)
    d = np.abs(output.astype(np.float64) - truth).mean(-1)
    return {"l1_mouth_open": masked_l1(output, truth, mouth),
            "interior_share": float((d * interior).sum() / max(float((d * mouth).sum()), 1e-9)),
            "l1_mouth_open_interior_oracle": masked_l1(interior_oracle(output, truth, interior), truth, mouth)}


def summarise(face_rows: list[dict[str, float]], mouth_rows: list[dict[str, float]]) -> dict[str, Any]:
    """Means of the per-frame rows; the regions' error and area as shares of the face's."""
    out: dict[str, Any] = {"face_frames": len(face_rows), "open_mouth_frames": len(mouth_rows)}
    for key in ("psnr_face", "psnr_face_offset_oracle", "psnr_face_blur"):
        out[key] = float(np.mean([r[key] for r in face_rows]))
    se = {n: sum(r[f"se_{n}"] for r in face_rows) for n in REGIONS}
    area = {n: sum(r[f"area_{n}"] for r in face_rows) for n in REGIONS}
    out["regions"] = {n: {"error_share": se[n] / max(sum(se.values()), 1e-12),
                          "area_share": area[n] / max(sum(area.values()), 1e-12)} for n in REGIONS}
    for key in ("l1_mouth_open", "interior_share", "l1_mouth_open_interior_oracle"):
        out[key] = float(np.mean([r[key] for r in mouth_rows])) if mouth_rows else float("nan")
    return out


def run_budget(clips: list, data_dir: Path, runner: GeneratorRunner, frames_per_clip: int = 10, crop_px: int = 256,
               progress: bool = True) -> dict[str, Any]:
    """``summarise`` over val: ``frames_per_clip`` self-reenactment frames per clip (as ``evaluate`` picks
    them) and the open-mouth frames of ``regions.region_eval`` (at most 6 per clip)."""
    face_rows: list[dict[str, float]] = []
    for clip in tqdm(clips, desc="error budget", unit="clip", disable=not progress):
        plan = plan_clip(np.flatnonzero(clip.found), frames_per_clip, 0)
        if plan is not None:
            frames = read_frames(data_dir / clip.row.file, plan.wanted)
            for f in reenact_clip(clip, frames, plan, crop_px, runner, StageTimings()).frames.values():
                face_rows.append(face_budget(f.outputs.trained, f.truth, f.points, f.valid))
    mouth_rows = [mouth_budget(r.relit(r.trained), r.sample.target, r.sample.driven_points,
                               r.sample.valid.astype(np.float64) / 255)
                  for r in region_samples(clips, data_dir, crop_px, runner, WarpConfig(), progress=progress,
                                          keep=lambda _blink, open_mouth: open_mouth)]
    return summarise(face_rows, mouth_rows)


def markdown(budget: dict[str, Any]) -> str:
    """The budget as Markdown tables."""
    r = budget["regions"]
    lines = [(f"Face, {budget['face_frames']} self-reenactment frames: PSNR {budget['psnr_face']:.2f} dB; "
             f"with each frame's colour offset removed {budget['psnr_face_offset_oracle']:.2f} dB; "
             f"blurred (sigma {BLUR_SIGMA} px at 256) {budget['psnr_face_blur']:.2f} dB."), "",
             "| region | share of the face's squared error | share of its area |", "|---|---|---|",
             *[f"| {n} | {r[n]['error_share']:.3f} | {r[n]['area_share']:.3f} |" for n in REGIONS], "",
             (f"Open mouths, {budget['open_mouth_frames']} frames: mouth L1 {budget['l1_mouth_open']:.4f}, of which "
             f"{budget['interior_share']:.0%} inside the inner lips; with the interior from the ground truth "
             f"{budget['l1_mouth_open_interior_oracle']:.4f}.")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=10, help="self-reenactment frames per val clip")
    p.add_argument("--weights", default=None, help="refiner weights (default: the shipped ones)")
    p.add_argument("--out", type=Path, default=Path("benchmarks") / "quality" / "error_budget.json")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    paths = EvalPaths.of(EvalConfig())
    clips = build_landmark_cache(paths.data_dir, paths.cache_dir, ("val",), progress=not a.no_progress)
    runner = open_runner(a.weights, "onnxruntime", "fp32", expected=contract_for(WarpConfig().version))
    budget = run_budget(clips, paths.data_dir, runner, a.frames, progress=not a.no_progress)
    budget["weights"] = a.weights or "shipped"
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(budget, indent=2) + "\n")
    print(markdown(budget))


if __name__ == "__main__":
    main()
