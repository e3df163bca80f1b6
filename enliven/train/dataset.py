"""Self-reenactment pairs: a source frame and a driving frame of the same clip, as the refiner sees them.

The crop transform comes from the SOURCE frame's landmarks (as at inference, where it comes
from the photo) and is applied to the driving frame too, so the driving frame's crop is the
ground truth and its landmarks mapped into the crop are the driven landmarks. The analytic
output is ``Warper.warp`` + ``fill_mouth_gap`` at the crop's own size, exactly as in
``Animator._animate``; it is then brought to the refiner's resolution by ``refiner_inputs``,
the same function the runtime uses.

Pairs are precomputed once into a folder of .npy arrays outside the repo (a warp per pair on
the fly would starve two cores), resumably, clip by clip. ``PairDataset`` reads them through
memory maps and augments each sample (horizontal flip with mirrored landmarks, colour).
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch

from ..engine import topology as topo
from ..engine.canonical import load_canonical
from ..engine.compose import CropTransform, crop, crop_transform
from ..engine.motion import FaceState, apply_pose, clamp_closures
from ..engine.refine import face_gate, refiner_inputs, scale_points
from ..engine.video_io import DrivingVideo
from ..engine.warp import WARP_VERSION, Warper, WarpConfig, fill_mouth_gap, lip_color
from .cache import (
    DEFAULT_CACHE_DIR,
    DEFAULT_DATA_DIR,
    ClipLandmarks,
    load_clip_landmarks,
    read_manifest,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairConfig:
    """How training pairs are drawn and made."""

    crop_px: int = 256  # side of the crop the analytic warp runs at (as at inference)
    net_px: int = 128  # side of the stored pair (the refiner's resolution)
    pairs_per_person: int = 160  # pairs drawn for each person (their clips share them by length)
    drivers_per_source: int = 8  # driving frames drawn for each source frame
    mouth_open_share: float = 0.5  # share of drivers drawn from frames whose mouth opens wider than the source's
    blink_share: float = 0.25  # share of drivers drawn from frames with (nearly) closed eyes
    scale_jitter: float = 0.06  # crop scale jitter, +- fraction (scale augmentation)
    shift_jitter: float = 0.03  # crop shift jitter, +- fraction of the side
    min_frame_gap: int = 3  # source and driver at least this many frames apart
    dev_people: int = 4  # train people held out of the pairs to watch a held-out loss (never val people)
    seed: int = 0  # seed of the draw and the jitter
    warp_version: int = WARP_VERSION  # the warp the pairs were made with (a new one rebuilds them)
    clamp_closures: bool = True  # keep the driver's lids and lips apart as retarget() does at inference

    def digest(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]

    def warp_config(self) -> WarpConfig:
        """The analytic warp of ``warp_version`` (``WarpConfig.of_version``; ValueError for an unknown one)."""
        return WarpConfig.of_version(self.warp_version)


# --- per-frame measurements, vectorised over frames ------------------------------------------------

def _iod(points: np.ndarray) -> np.ndarray:
    r = points[:, topo.RIGHT_EYE, :2].mean(1)
    le = points[:, topo.LEFT_EYE, :2].mean(1)
    return np.maximum(np.linalg.norm(le - r, axis=-1), 1e-6)


def mouth_openings(points: np.ndarray) -> np.ndarray:
    """topology.mouth_opening for every frame: (F, 478, 3) -> (F,) (NaN frames give NaN)."""
    gap = np.linalg.norm(points[:, topo.LIPS_INNER_LOWER, :2] - points[:, topo.LIPS_INNER_UPPER, :2], axis=-1)
    return gap.mean(1) / _iod(points)


def eye_openings(points: np.ndarray) -> np.ndarray:
    """Mean of both eyes' topology.eye_opening for every frame: (F, 478, 3) -> (F,)."""
    r = np.linalg.norm(points[:, topo.RIGHT_EYE_LOWER, :2] - points[:, topo.RIGHT_EYE_UPPER, :2], axis=-1).mean(1)
    le = np.linalg.norm(points[:, topo.LEFT_EYE_LOWER, :2] - points[:, topo.LEFT_EYE_UPPER, :2], axis=-1).mean(1)
    return (r + le) / 2 / _iod(points)


# --- one pair ----------------------------------------------------------------------------------------

def jitter_transform(t: CropTransform, scale: float, shift_px: tuple[float, float]) -> CropTransform:
    """The crop zoomed by ``scale`` about its centre and moved by ``shift_px`` (crop pixels)."""
    c = (t.size_px - 1) / 2
    m = t.matrix * scale
    m[:, 2] = scale * (t.matrix[:, 2] - c) + c + np.asarray(shift_px)
    return CropTransform(m, t.size_px)


def valid_crop(frame_hw: tuple[int, int], transform: CropTransform) -> np.ndarray:
    """(S, S) uint8: 255 where the crop sees the frame, 0 where it runs off it (constant border)."""
    ones = np.full(frame_hw, 255, np.uint8)
    s = transform.size_px
    return cv2.warpAffine(ones, transform.matrix, (s, s), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


class Reenactment(NamedTuple):
    """One self-reenactment sample at the crop's own size."""

    source: np.ndarray  # (S, S, 3) uint8, source crop
    target: np.ndarray  # (S, S, 3) uint8, driving frame's crop (ground truth)
    valid: np.ndarray  # (S, S) uint8, 255 inside the driving frame
    analytic: np.ndarray  # (S, S, 3) uint8, Warper.warp + fill_mouth_gap
    source_points: np.ndarray  # (478, 3) float64, crop pixels
    driven_points: np.ndarray  # (478, 3) float64, crop pixels (the driver's own landmarks)


def clamp_like_retarget(source_points: np.ndarray, driver_points: np.ndarray) -> np.ndarray:
    """The driver's landmarks (478, 3) with lids and lips kept apart exactly as ``motion.retarget`` does.

    At inference the driven landmarks never close the lids or lips completely (``clamp_closures``,
    floored by the source's own gaps); raw landmarks of a shut eye make the spline fold into rings.
    """
    canon = load_canonical().points
    src = FaceState.measure(np.asarray(source_points, np.float64), canon)
    drv = FaceState.measure(np.asarray(driver_points, np.float64), canon)
    return apply_pose(clamp_closures(drv.shape, src.shape), drv.pose)


def self_reenact(source_frame: np.ndarray, source_points: np.ndarray, driver_frame: np.ndarray,
                 driver_points: np.ndarray, transform: CropTransform, warper: Warper | None = None,
                 source_crop: np.ndarray | None = None, clamp: bool = True) -> Reenactment:
    """Crop both frames with the source's transform and warp the source to the driver's landmarks.

    Args: frames (H, W, 3) uint8 RGB; points (478, 3) frame pixels; ``warper``/``source_crop`` may
    be passed in when one source is reused for many drivers; ``clamp``: driven landmarks clamped as
    at inference (``clamp_like_retarget``).
    """
    if clamp:
        driver_points = clamp_like_retarget(source_points, driver_points)
    src_pts = transform.points_to_crop(source_points)
    drv_pts = transform.points_to_crop(driver_points)
    if source_crop is None:
        source_crop = crop(source_frame, transform)
    if warper is None:
        warper = Warper(src_pts, transform.size_px)
    analytic = warper.warp(source_crop, drv_pts)
    fill_mouth_gap(analytic, drv_pts, warper.mouth(drv_pts), lip_color(source_crop, src_pts))
    return Reenactment(source_crop, crop(driver_frame, transform), valid_crop(driver_frame.shape[:2], transform),
                       analytic, src_pts, drv_pts)


# --- drawing pairs -----------------------------------------------------------------------------------

class PairPlan(NamedTuple):
    clip: int  # index into the clip list
    source: int  # frame index
    driver: int  # frame index
    kind: int  # 0 any, 1 mouth opens, 2 blink


def _person_split(clips: list[ClipLandmarks], dev_people: int, seed: int) -> tuple[set[str], set[str]]:
    people = sorted({c.row.person_id for c in clips})
    rng = np.random.default_rng(seed + 1)
    dev = set(rng.choice(people, size=min(dev_people, max(len(people) - 1, 0)), replace=False).tolist())
    return set(people) - dev, dev


def plan_pairs(clips: list[ClipLandmarks], people: set[str], cfg: PairConfig, per_person: int) -> list[PairPlan]:
    """Draw (clip, source, driver) triples: ``per_person`` per person, mouth-open and blink drivers boosted."""
    rng = np.random.default_rng(cfg.seed)
    plans: list[PairPlan] = []
    by_person: dict[str, list[int]] = {}
    for i, c in enumerate(clips):
        if c.row.person_id in people:
            by_person.setdefault(c.row.person_id, []).append(i)
    for person in sorted(by_person):
        idx = by_person[person]
        lengths = np.array([clips[i].found.sum() for i in idx], np.float64)
        if lengths.sum() < 2 * cfg.min_frame_gap + 2:
            continue
        counts = np.floor(per_person * lengths / lengths.sum()).astype(int)
        counts[np.argmax(lengths)] += per_person - counts.sum()
        for ci, n in zip(idx, counts):
            if n <= 0:
                continue
            clip = clips[ci]
            frames = np.flatnonzero(clip.found)
            if len(frames) < 2 * cfg.min_frame_gap + 2:
                continue
            mouth = mouth_openings(clip.points[frames])
            eyes = eye_openings(clip.points[frames])
            closed_src = frames[mouth <= np.quantile(mouth, 0.3)]
            blink = frames[eyes < 0.6 * np.median(eyes)]
            n_src = max(1, int(round(n / cfg.drivers_per_source)))
            for k in range(n_src):
                pool = closed_src if rng.random() < 0.7 else frames
                s = int(rng.choice(pool))
                s_mouth = mouth[np.searchsorted(frames, s)]
                opens = frames[mouth > max(s_mouth + 0.12, np.quantile(mouth, 0.75))]
                far = np.abs(frames - s) >= cfg.min_frame_gap
                m = n // n_src + (1 if k < n % n_src else 0)
                for _ in range(m):
                    r = rng.random()
                    kind, pool_d = 0, frames[far]
                    if r < cfg.mouth_open_share:
                        cand = opens[np.abs(opens - s) >= cfg.min_frame_gap]
                        if len(cand):
                            kind, pool_d = 1, cand
                    elif r < cfg.mouth_open_share + cfg.blink_share:
                        cand = blink[np.abs(blink - s) >= cfg.min_frame_gap]
                        if len(cand):
                            kind, pool_d = 2, cand
                    if len(pool_d) == 0:
                        continue
                    plans.append(PairPlan(ci, s, int(rng.choice(pool_d)), kind))
    return plans


# --- the pair store ------------------------------------------------------------------------------------

_IMAGE_FIELDS = ("source", "warped", "target", "drawing")  # (N, R, R, 3) uint8 each


def read_frames(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    """The frames of the video at ``path`` whose indices are in ``wanted``, decoded in one pass.

    Returns: {index: (H, W, 3) uint8 RGB, upright}; indices past the end of the video are missing.
    Decoding stops at the largest wanted index. Raises: BadVideoError if the file cannot be read.
    """
    out: dict[int, np.ndarray] = {}
    if not wanted:
        return out
    last = max(wanted)
    with DrivingVideo(path) as video:
        for i, frame in enumerate(video):
            if i in wanted:
                out[i] = frame
            if i >= last:
                break
    return out


def build_pairs(data_dir: Path, cache_dir: Path, cfg: PairConfig, subset: str = "train",
                progress: bool = True) -> Path:
    """Make (or complete) the pair store of ``subset`` ("train" or "dev"); returns its folder.

    Only split == train clips are used; "dev" is a few train people held out of "train".
    The folder is ``<cache_dir>/pairs/<config digest>/<subset>``; a finished one is reused.
    """
    from tqdm import tqdm

    root = Path(cache_dir) / "pairs" / cfg.digest() / subset
    done_file = root / "done.json"
    if done_file.exists():
        return root
    rows = read_manifest(data_dir, "clip", "train")
    clips = [load_clip_landmarks(cache_dir, r) for r in rows]
    train_people, dev_people = _person_split(clips, cfg.dev_people, cfg.seed)
    people = train_people if subset == "train" else dev_people
    per_person = cfg.pairs_per_person if subset == "train" else max(cfg.pairs_per_person // 4, 8)
    plans = plan_pairs(clips, people, cfg, per_person)
    n, r = len(plans), cfg.net_px
    root.mkdir(parents=True, exist_ok=True)
    (root.parent / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    progress_file = root / "progress.json"
    start_clip = json.loads(progress_file.read_text())["next_clip"] if progress_file.exists() else 0
    mode = "r+" if start_clip > 0 else "w+"
    arrays = {f: np.lib.format.open_memmap(root / f"{f}.npy", mode, np.uint8, (n, r, r, 3)) for f in _IMAGE_FIELDS}
    arrays["valid"] = np.lib.format.open_memmap(root / "valid.npy", mode, np.uint8, (n, r, r))
    points = {f: np.lib.format.open_memmap(root / f"{f}.npy", mode, np.float32, (n, topo.NUM_LANDMARKS, 3))
              for f in ("source_points", "driven_points")}
    meta = np.array([(p.clip, p.source, p.driver, p.kind) for p in plans], np.int32).reshape(-1, 4)
    np.save(root / "plan.npy", meta)
    (root / "clips.json").write_text(json.dumps([[c.row.file, c.row.person_id] for c in clips]))
    rng = np.random.default_rng(cfg.seed + 7)
    jitter = rng.uniform(-1, 1, size=(n, 3))
    order = sorted(range(n), key=lambda i: (plans[i].clip, plans[i].source, plans[i].driver))
    by_clip: dict[int, list[int]] = {}
    for i in order:
        by_clip.setdefault(plans[i].clip, []).append(i)
    clip_ids = sorted(by_clip)
    s_px = cfg.crop_px
    bar = tqdm(clip_ids[start_clip:], desc=f"pairs ({subset})", unit="clip", disable=not progress)
    for k, ci in enumerate(bar, start=start_clip):
        clip = clips[ci]
        items = by_clip[ci]
        frames = read_frames(Path(data_dir) / clip.row.file, {plans[i].source for i in items}
                              | {plans[i].driver for i in items})
        cached: tuple[int, Warper, np.ndarray, CropTransform] | None = None
        for i in items:
            p = plans[i]
            if p.source not in frames or p.driver not in frames:
                continue  # the clip decoded fewer frames than tracked: leave the pair black (valid = 0)
            if cached is None or cached[0] != p.source:
                base = crop_transform(clip.points[p.source], s_px)
                j = jitter[i]
                t = jitter_transform(base, 1 + cfg.scale_jitter * j[0], (cfg.shift_jitter * s_px * j[1],
                                                                        cfg.shift_jitter * s_px * j[2]))
                src_pts = t.points_to_crop(clip.points[p.source])
                cached = (p.source, Warper(src_pts, s_px, cfg.warp_config()), crop(frames[p.source], t), t)
            _, warper, src_crop, t = cached
            sample = self_reenact(frames[p.source], clip.points[p.source], frames[p.driver], clip.points[p.driver],
                                  t, warper, src_crop, clamp=cfg.clamp_closures)
            inp = refiner_inputs(sample.analytic, sample.driven_points, r)
            area = cv2.INTER_AREA
            arrays["source"][i] = cv2.resize(sample.source, (r, r), interpolation=area)
            arrays["target"][i] = cv2.resize(sample.target, (r, r), interpolation=area)
            arrays["warped"][i] = inp.warped
            arrays["drawing"][i] = inp.drawing
            arrays["valid"][i] = cv2.resize(sample.valid, (r, r), interpolation=area)
            points["source_points"][i] = scale_points(sample.source_points, r / s_px)
            points["driven_points"][i] = inp.points
        for a in (*arrays.values(), *points.values()):
            a.flush()
        progress_file.write_text(json.dumps({"next_clip": k + 1}))
    done_file.write_text(json.dumps({"pairs": n, "clips": len(clip_ids), "people": sorted(people)}))
    return root


# --- region weights ----------------------------------------------------------------------------------

FACE_WEIGHT, MOUTH_WEIGHT, EYE_WEIGHT = 3.0, 7.0, 4.0  # loss weights of face, mouth and eye pixels (rest: 1)


def _grown_poly(points: np.ndarray, idx: np.ndarray, grow: float) -> np.ndarray:
    p = points[idx, :2]
    c = p.mean(axis=0)
    return np.round((c + (p - c) * grow) * 16).astype(np.int32)


def region_masks(points: np.ndarray, size_px: int) -> np.ndarray:
    """(3, S, S) float32 soft masks of face, mouth and both eyes for landmarks (478, 2|3) in S pixels."""
    out = np.zeros((3, size_px, size_px), np.uint8)
    cv2.fillPoly(out[0], [_grown_poly(points, topo.FACE_OVAL, 1.0)], 255, cv2.LINE_AA, 4)
    cv2.fillPoly(out[1], [_grown_poly(points, topo.LIPS_OUTER, 1.25)], 255, cv2.LINE_AA, 4)
    cv2.fillPoly(out[2], [_grown_poly(points, topo.RIGHT_EYE, 1.5), _grown_poly(points, topo.LEFT_EYE, 1.5)],
                 255, cv2.LINE_AA, 4)
    k = max(3, (size_px // 40) | 1)
    return np.stack([cv2.GaussianBlur(m, (k, k), 0) for m in out]).astype(np.float32) / 255.0


def weight_map(regions: np.ndarray) -> np.ndarray:
    """(S, S) float32 loss weights from region masks (3, S, S): max of 1 and each region's weight."""
    w = np.maximum(FACE_WEIGHT * regions[0], MOUTH_WEIGHT * regions[1])
    return np.maximum(np.maximum(w, EYE_WEIGHT * regions[2]), 1.0)


def mirror_points(points: np.ndarray, size_px: int) -> np.ndarray:
    """Landmarks of the horizontally flipped image: x -> S - 1 - x and left/right points swapped."""
    out = np.asarray(points)[load_canonical().mirror].copy()
    out[..., 0] = size_px - 1 - out[..., 0]
    return out


# --- the torch dataset -----------------------------------------------------------------------------------

class Batch(NamedTuple):
    """A training batch; images (N, C, R, R) float32 in [0, 1]."""

    source: torch.Tensor  # (N, 3, R, R)
    warped: torch.Tensor  # (N, 3, R, R) analytic output
    target: torch.Tensor  # (N, 3, R, R) ground truth
    drawing: torch.Tensor  # (N, 3, R, R) landmark drawing of the driver
    valid: torch.Tensor  # (N, 1, R, R) 1 inside the driving frame
    gate: torch.Tensor  # (N, 1, R, R) where the refiner may act
    regions: torch.Tensor  # (N, 3, R, R) face, mouth, eyes
    weight: torch.Tensor  # (N, 1, R, R) loss weights (already times valid)
    driven_points: torch.Tensor  # (N, 478, 3) R pixels
    kind: torch.Tensor  # (N,) int64: 0 any, 1 mouth opens, 2 blink


@dataclass(frozen=True)
class AugmentConfig:
    flip: float = 0.5  # probability of a horizontal flip (landmarks mirrored)
    brightness: float = 0.15  # +- additive, image units
    contrast: float = 0.15  # +- relative
    saturation: float = 0.2  # +- relative
    channel_gain: float = 0.06  # +- relative gain per RGB channel (white balance)
    greyscale: float = 0.1  # probability that a whole pair (source, warp, target) is made black-and-white,
    # so the refiner learns to add no colour the photo lacks (the runtime caps it too: refine.limit_chroma)


class PairDataset(torch.utils.data.Dataset):
    """The pairs of a store folder (``build_pairs``), optionally augmented."""

    def __init__(self, root: Path, augment: AugmentConfig | None = None) -> None:
        self.root = Path(root)
        self.augment = augment
        self._images = {f: np.load(self.root / f"{f}.npy", mmap_mode="r") for f in _IMAGE_FIELDS}
        self._valid = np.load(self.root / "valid.npy", mmap_mode="r")
        self._points = np.load(self.root / "driven_points.npy", mmap_mode="r")
        self._plan = np.load(self.root / "plan.npy")
        # pairs whose frames could not be decoded were left empty: skip them
        self.indices = np.flatnonzero(self._points[:, 0, 0] != 0) if len(self._points) else np.zeros(0, int)

    def __len__(self) -> int:
        return len(self.indices)

    def sample(self, i: int, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        """Pair ``i`` as numpy arrays (HWC uint8 images, points), flipped if the rng says so."""
        j = int(self.indices[i])
        d = {f: np.array(self._images[f][j]) for f in _IMAGE_FIELDS}
        d["valid"] = np.array(self._valid[j])
        pts = np.array(self._points[j], np.float64)
        r = d["valid"].shape[0]
        if rng is not None and self.augment is not None and rng.random() < self.augment.flip:
            d = {k: np.ascontiguousarray(v[:, ::-1]) for k, v in d.items()}
            pts = mirror_points(pts, r)
        d["points"] = pts
        d["kind"] = np.int64(self._plan[j, 3])
        return d

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(torch.randint(0, 2**31, ()).item()) if self.augment else None
        return self.sample(i, rng)


def collate(samples: list[dict[str, np.ndarray]], augment: AugmentConfig | None = None,
            generator: torch.Generator | None = None) -> Batch:
    """Stack samples into a Batch; colour augmentation (the same for source, warp and target) if given."""
    def img(key: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([s[key] for s in samples])).permute(0, 3, 1, 2).float() / 255.0

    r = samples[0]["valid"].shape[0]
    regions = np.stack([region_masks(s["points"], r) for s in samples])
    gate = np.stack([face_gate(s["points"], r) for s in samples])[:, None]
    valid = torch.from_numpy(np.stack([s["valid"] for s in samples]))[:, None].float() / 255.0
    weight = torch.from_numpy(np.stack([weight_map(g) for g in regions]))[:, None] * valid
    source, warped, target = img("source"), img("warped"), img("target")
    if augment is not None:
        n = len(samples)
        u = torch.rand(n, 6, generator=generator) * 2 - 1
        gain = 1 + augment.channel_gain * torch.rand(n, 3, 1, 1, generator=generator).mul(2).sub(1)
        bright = (augment.brightness * u[:, 0]).view(n, 1, 1, 1)
        contrast = (1 + augment.contrast * u[:, 1]).view(n, 1, 1, 1)
        sat = (1 + augment.saturation * u[:, 2]).view(n, 1, 1, 1)
        grey_pair = torch.rand(n, generator=generator) < augment.greyscale
        sat = torch.where(grey_pair.view(n, 1, 1, 1), torch.zeros_like(sat), sat)

        def colour(x: torch.Tensor) -> torch.Tensor:
            x = x * gain
            grey = x.mean(dim=1, keepdim=True)
            x = grey + (x - grey) * sat
            x = (x - 0.5) * contrast + 0.5 + bright
            return x.clamp(0, 1)

        source, warped, target = colour(source), colour(warped), colour(target)
    return Batch(source, warped, target, img("drawing"), valid, torch.from_numpy(gate), torch.from_numpy(regions),
                 weight, torch.from_numpy(np.stack([s["points"] for s in samples])).float(),
                 torch.from_numpy(np.array([s["kind"] for s in samples])))


def clean_pairs(cache_dir: Path) -> None:
    """Remove every pair store (they are rebuilt on demand)."""
    shutil.rmtree(Path(cache_dir) / "pairs", ignore_errors=True)


if __name__ == "__main__":
    import argparse

    logging.basicConfig(level=logging.INFO)
    ap = argparse.ArgumentParser(description="Build the self-reenactment pair stores.")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE_DIR)
    ap.add_argument("--subset", default="train", choices=("train", "dev"))
    a = ap.parse_args()
    print(build_pairs(a.data, a.cache, PairConfig(), a.subset))



def write_store(root: Path, source: np.ndarray, warped: np.ndarray, target: np.ndarray, drawing: np.ndarray,
                valid: np.ndarray, driven_points: np.ndarray, kind: np.ndarray | None = None) -> Path:
    """Write a pair store from whole arrays (synthetic data, tests): images (N, R, R, 3) uint8,
    valid (N, R, R) uint8, driven_points (N, 478, 3) float32 in R pixels, kind (N,) int."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name, a in (("source", source), ("warped", warped), ("target", target), ("drawing", drawing),
                    ("valid", valid)):
        np.save(root / f"{name}.npy", np.ascontiguousarray(a, np.uint8))
    np.save(root / "driven_points.npy", np.asarray(driven_points, np.float32))
    np.save(root / "source_points.npy", np.asarray(driven_points, np.float32))
    k = np.zeros(len(source), np.int32) if kind is None else np.asarray(kind, np.int32)
    plan = np.zeros((len(source), 4), np.int32)
    plan[:, 3] = k
    np.save(root / "plan.npy", plan)
    return root
