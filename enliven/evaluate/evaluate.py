"""``enliven evaluate``: the quality of analytic and trained mode on the data set's val split.

Self-reenactment (each val clip: source = its first frame with a face, driven by its own later
frames; the driving frame's crop is the ground truth): L1, PSNR, SSIM and a perceptual distance
on the face region and on the whole crop (off-frame pixels excluded), AKD (landmark distance,
MediaPipe on output vs ground truth), expression error, CSIM (dlib's face embedding, independent
of the training losses) and temporal flicker.
Cross-reenactment (the first frame of person A driven by a clip of person B, through the
Animator): CSIM to A, pose and expression error to B (changes since the first frame), flicker.
Plus the cost per frame of the warp and the generator.

Metric functions take (H, W, 3) uint8 images and an optional (H, W) mask in [0, 1] and are tested
on constructed inputs (tests/test_evaluate.py). Research data never enters the repo: image grids
of val people go to ``grids_dir`` (outside the repo by default); the committed grid shows the
public-domain built-in photo driven by val clips, with the driver drawn as landmarks only.
"""
from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch

from ..engine import topology as topo
from ..engine.canonical import angles_from_rotation, load_canonical
from ..engine.errors import EnlivenError, ModelFileError
from ..engine.contract import contract_for
from ..engine.motion import FaceState
from .regions import report_markdown, report_sections

log = logging.getLogger(__name__)

EXPRESSION_POINTS = np.unique(np.concatenate([topo.LIPS_OUTER, topo.LIPS_INNER, topo.RIGHT_EYE, topo.LEFT_EYE,
                                              topo.RIGHT_EYEBROW, topo.LEFT_EYEBROW]))


# --- metrics on images ------------------------------------------------------------------------------------

def _f(img: np.ndarray) -> np.ndarray:
    return np.asarray(img, np.float64) / 255.0


def _mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    m = np.ones(shape[:2]) if mask is None else np.asarray(mask, np.float64)
    if m.shape != shape[:2]:
        raise EnlivenError(f"mask shape {m.shape} does not match image shape {shape[:2]}")
    return m


def l1_error(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute difference in [0, 1] units over the masked pixels (mask weights, 0 = ignored)."""
    m = _mask(mask, a.shape)
    return float((np.abs(_f(a) - _f(b)).mean(-1) * m).sum() / max(m.sum(), 1e-9))


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, max_db: float = 100.0) -> float:
    """Peak signal-to-noise ratio in dB (peak 1) over the masked pixels; ``max_db`` for identical images."""
    m = _mask(mask, a.shape)
    mse = float((((_f(a) - _f(b)) ** 2).mean(-1) * m).sum() / max(m.sum(), 1e-9))
    return max_db if mse <= 10 ** (-max_db / 10) else float(-10 * np.log10(mse))


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """SSIM (Gaussian window 11, sigma 1.5, per channel, then averaged) over the masked pixels."""
    m = _mask(mask, a.shape)
    x, y = _f(a), _f(b)
    c1, c2 = 0.01 ** 2, 0.03 ** 2

    def blur(z: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float((smap.mean(-1) * m).sum() / max(m.sum(), 1e-9))


class PerceptualDistance:
    """EfficientNet-Lite0 (ImageNet) feature distance, as in the training loss; 0 for identical images.

    LPIPS's weights cannot be had offline; this is the same kind of measure on the network we ship
    with the `train` extra. Off-mask pixels are replaced by the reference's before both pass the net.
    """

    def __init__(self) -> None:
        from ..train.losses import PerceptualLoss

        self.loss = PerceptualLoss().eval()

    def __call__(self, a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
        m = torch.from_numpy(_mask(mask, a.shape)).float()[None, None]
        ta = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float() / 255
        tb = torch.from_numpy(np.ascontiguousarray(b)).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            return float(self.loss(ta * m + tb * (1 - m), tb))


def keypoint_distance(a: np.ndarray, b: np.ndarray) -> float:
    """AKD: mean Euclidean distance (pixels) between matching 2-D landmarks (478, 2|3) of two images."""
    return float(np.linalg.norm(np.asarray(a)[:, :2] - np.asarray(b)[:, :2], axis=1).mean())


def expression_error(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance between the pose-free shapes of lips, eyes and brows, canonical units (interocular = 1)."""
    canon = load_canonical().points
    sa, sb = FaceState.measure(np.asarray(a, np.float64), canon), FaceState.measure(np.asarray(b, np.float64), canon)
    return float(np.linalg.norm(sa.shape[EXPRESSION_POINTS] - sb.shape[EXPRESSION_POINTS], axis=1).mean())


def head_angles(points: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) degrees of landmarks (478, 3)."""
    state = FaceState.measure(np.asarray(points, np.float64), load_canonical().points)
    return np.array(angles_from_rotation(state.pose.rotation))


def temporal_flicker(frames: list[np.ndarray], reference: list[np.ndarray] | None = None,
                     mask: np.ndarray | None = None) -> float:
    """Mean absolute frame-to-frame change (in [0, 1] units) beyond the reference's own change.

    With a reference (the ground truth), |(o_t - o_t-1) - (g_t - g_t-1)|; without, |o_t - o_t-1|.
    """
    if len(frames) < 2:
        return 0.0
    vals = []
    for t in range(1, len(frames)):
        d = _f(frames[t]) - _f(frames[t - 1])
        if reference is not None:
            d = d - (_f(reference[t]) - _f(reference[t - 1]))
        m = _mask(mask, d.shape)
        vals.append(float((np.abs(d).mean(-1) * m).sum() / max(m.sum(), 1e-9)))
    return float(np.mean(vals))


def face_mask(points: np.ndarray, size_px: int) -> np.ndarray:
    """(S, S) float64 in [0, 1]: the face oval of landmarks (478, 2|3) in S pixels, antialiased."""
    m = np.zeros((size_px, size_px), np.uint8)
    cv2.fillPoly(m, [np.round(np.asarray(points)[topo.FACE_OVAL, :2] * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    return m.astype(np.float64) / 255.0


def mouth_mask(points: np.ndarray, size_px: int, grow: float = 1.3) -> np.ndarray:
    """(S, S) float64: the outer lips grown ``grow`` about their centre."""
    p = np.asarray(points)[topo.LIPS_OUTER, :2]
    c = p.mean(0)
    m = np.zeros((size_px, size_px), np.uint8)
    cv2.fillPoly(m, [np.round((c + (p - c) * grow) * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    return m.astype(np.float64) / 255.0


# --- the identity judge: dlib ---------------------------------------------------------------------------------

class DlibIdentity:
    """dlib's 128-d face embedding (face_recognition_models, loaded by path); the face box comes from landmarks."""

    def __init__(self) -> None:
        try:
            import importlib.util

            import dlib

            spec = importlib.util.find_spec("face_recognition_models")
        except ImportError as e:
            raise ModelFileError("CSIM needs dlib-bin and face_recognition_models: pip install 'enliven[train]'") from e
        if spec is None or not spec.submodule_search_locations:
            raise ModelFileError("CSIM needs face_recognition_models: pip install 'enliven[train]'")
        models = Path(list(spec.submodule_search_locations)[0]) / "models"
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self._net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def embed(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        """(128,) float64 embedding of the face whose landmarks (478, 2|3) are given, image (H, W, 3) uint8 RGB."""
        oval = np.asarray(points)[topo.FACE_OVAL, :2]
        (x0, y0), (x1, y1) = oval.min(0), oval.max(0)
        top = y0 + 0.15 * (y1 - y0)  # dlib's boxes start about at the brows
        rect = self._dlib.rectangle(int(x0), int(top), int(x1), int(y1))
        shape = self._shape(np.ascontiguousarray(image), rect)
        return np.array(self._net.compute_face_descriptor(np.ascontiguousarray(image), shape))

    @staticmethod
    def cosine(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


class StaticMesh:
    """MediaPipe FaceMesh in static mode, one instance reused: landmarks of a crop, or None."""

    def __init__(self) -> None:
        import mediapipe as mp

        from ..engine.landmarks import native_logs_silenced

        with native_logs_silenced():
            self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                                         refine_landmarks=True, min_detection_confidence=0.3)
        self._first = True

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        if self._first:  # the first run prints the TFLite delegate lines
            from ..engine.landmarks import native_logs_silenced

            with native_logs_silenced():
                r = self._mesh.process(np.ascontiguousarray(image))
            self._first = False
        else:
            r = self._mesh.process(np.ascontiguousarray(image))
        if not r.multi_face_landmarks:
            return None
        h, w = image.shape[:2]
        pts = np.array([(p.x, p.y, p.z) for p in r.multi_face_landmarks[0].landmark], np.float64)
        return pts * [w, h, w]


# --- the run -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EvalConfig:
    data_dir: str = ""  # the data set (MANIFEST.tsv); default ../shared/data
    cache_dir: str = ""  # landmark cache; default ~/.cache/enliven
    split: str = "val"  # evaluate on this split only
    crop_px: int = 256  # crop side the engine runs at
    frames_per_clip: int = 40  # driving frames per clip, evenly spaced after the source frame
    flicker_frames: int = 12  # a run of consecutive frames per clip for the flicker measure
    csim_every: int = 2  # CSIM on every n-th evaluated frame (dlib is the slow part)
    cross_pairs: int = 16  # (photo of A, clip of B) pairs
    weights: str | None = None  # generator weights file; None = the shipped ones
    backend: str = "onnxruntime"  # what runs the generator: onnxruntime (as the product) or torch
    precision: str = "fp32"  # of the exported decoder: fp32, fp16 or int8 (onnxruntime only)
    grids_dir: str = ""  # where grids of val people go (outside the repo); default <cache_dir>/eval
    seed: int = 0
    lid_slide: bool = False  # analytic warp with sliding lids (WarpConfig.lid_slide, warp version 5)


class _Frame(NamedTuple):
    gt: np.ndarray
    analytic: np.ndarray
    trained: np.ndarray
    valid: np.ndarray
    points: np.ndarray  # driven (ground-truth) landmarks in crop pixels


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for r in rows for k in r})
    return {k: float(np.nanmean([r[k] for r in rows if k in r])) for k in keys}


def _frames_of(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    from ..train.dataset import _read_frames

    return _read_frames(path, wanted)


def evaluate(cfg: EvalConfig, out_json: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the whole evaluation; returns the report (also written as JSON when ``out_json`` is given)."""
    from tqdm import tqdm

    from ..animation.animator import Animator, AnimatorConfig
    from ..engine.compose import crop_transform
    from ..models.generator import count_flops, count_params, load_generator
    from ..export.runner import open_runner
    from ..train.cache import DEFAULT_CACHE_DIR, DEFAULT_DATA_DIR, build_landmark_cache
    from ..train.dataset import self_reenact
    from ..engine.warp import WARP_VERSION, Warper, WarpConfig

    data_dir = Path(cfg.data_dir or DEFAULT_DATA_DIR)
    cache_dir = Path(cfg.cache_dir or DEFAULT_CACHE_DIR)
    grids_dir = Path(cfg.grids_dir or cache_dir / "eval")
    grids_dir.mkdir(parents=True, exist_ok=True)
    if cfg.split != "val":
        log.warning("evaluating on split %r: the held-out people are in 'val'", cfg.split)
    clips = build_landmark_cache(data_dir, cache_dir, (cfg.split,), progress=progress)
    # quality v2: weights must match the warp; the shipped ones (warp 4) are measured on --lid-slide's warp too
    contract = contract_for(WarpConfig(lid_slide=cfg.lid_slide).version if cfg.weights else WARP_VERSION)
    if cfg.lid_slide and not cfg.weights:
        log.warning("--lid-slide with the shipped refiner: its rows add a warp-4 refiner to the warp-5 output")
    model = load_generator(path=Path(cfg.weights) if cfg.weights else None, expected=contract)
    runner = open_runner(cfg.weights, cfg.backend, cfg.precision, expected=contract)  # type: ignore[arg-type]
    percept, dlib_id, mesh = PerceptualDistance(), DlibIdentity(), StaticMesh()
    s = cfg.crop_px
    rng = np.random.default_rng(cfg.seed)
    self_rows: dict[str, list[dict[str, float]]] = {"analytic": [], "trained": []}
    per_clip: list[dict[str, Any]] = []
    showcase: list[tuple[float, np.ndarray]] = []
    random_rows: list[np.ndarray] = []
    timings: dict[str, list[float]] = {"warp_ms": [], "generator_ms": []}
    for clip in tqdm(clips, desc="self-reenactment", unit="clip", disable=not progress):
        found = np.flatnonzero(clip.found)
        if len(found) < 3:
            continue
        src = int(found[0])
        rest = found[found > src]
        picks = rest[np.unique(np.linspace(0, len(rest) - 1, min(cfg.frames_per_clip, len(rest))).astype(int))]
        mid = len(rest) // 2
        run = rest[mid:mid + cfg.flicker_frames]
        frames = _frames_of(data_dir / clip.row.file, {src, *picks.tolist(), *run.tolist()})
        t = crop_transform(clip.points[src], s)
        src_pts = t.points_to_crop(clip.points[src])
        warper = Warper(src_pts, s, WarpConfig(lid_slide=cfg.lid_slide))
        src_crop = None
        results: dict[int, _Frame] = {}
        for i in sorted(set(picks.tolist()) | set(run.tolist())):
            if i not in frames or src not in frames:
                continue
            t0 = time.perf_counter()
            smp = self_reenact(frames[src], clip.points[src], frames[i], clip.points[i], t, warper, src_crop)
            t1 = time.perf_counter()
            if src_crop is None:
                src_crop = smp.source
                runner.prepare(src_crop)
            trained = runner.refine(smp.analytic, smp.driven_points)
            t2 = time.perf_counter()
            timings["warp_ms"].append((t1 - t0) * 1e3)
            timings["generator_ms"].append((t2 - t1) * 1e3)
            results[i] = _Frame(smp.target, smp.analytic, trained, smp.valid.astype(np.float64) / 255,
                                smp.driven_points)
        clip_rows: dict[str, list[dict[str, float]]] = {"analytic": [], "trained": []}
        clip_show: list[tuple[float, np.ndarray]] = []
        gt_embed = {}
        for k, i in enumerate(picks.tolist()):
            if i not in results:
                continue
            fr = results[i]
            face = face_mask(fr.points, s) * fr.valid
            mouth = mouth_mask(fr.points, s) * fr.valid
            gt_pts = mesh(fr.gt)
            for mode in ("analytic", "trained"):
                img = getattr(fr, mode)
                row = {"l1_face": l1_error(img, fr.gt, face), "psnr_face": psnr(img, fr.gt, face),
                       "ssim_face": ssim(img, fr.gt, face), "perceptual_face": percept(img, fr.gt, face),
                       "l1_crop": l1_error(img, fr.gt, fr.valid), "psnr_crop": psnr(img, fr.gt, fr.valid),
                       "ssim_crop": ssim(img, fr.gt, fr.valid), "perceptual_crop": percept(img, fr.gt, fr.valid),
                       "l1_mouth": l1_error(img, fr.gt, mouth), "psnr_mouth": psnr(img, fr.gt, mouth)}
                out_pts = mesh(img)
                if gt_pts is not None and out_pts is not None:
                    row["akd_px"] = keypoint_distance(out_pts, gt_pts)
                    row["expression_error"] = expression_error(out_pts, gt_pts)
                else:
                    row["face_missed"] = 1.0
                if k % max(cfg.csim_every, 1) == 0:
                    if i not in gt_embed:
                        gt_embed[i] = dlib_id.embed(fr.gt, fr.points)
                    row["csim"] = dlib_id.cosine(dlib_id.embed(img, fr.points), gt_embed[i])
                row.setdefault("face_missed", 0.0)
                clip_rows[mode].append(row)
            opening = topo.mouth_opening(fr.points) - topo.mouth_opening(src_pts)
            if src_crop is not None:
                clip_show.append((opening + 0.01 * rng.random(), np.concatenate(
                    [src_crop, fr.gt, fr.analytic, fr.trained], axis=1)))
        if clip_show:  # the widest-opening frame of each clip, so one clip cannot fill the grid
            showcase.append(max(clip_show, key=lambda x: x[0]))
            random_rows.append(clip_show[int(rng.integers(len(clip_show)))][1])
        run_frames = [results[i] for i in run.tolist() if i in results]
        if len(run_frames) > 1:
            m = face_mask(run_frames[0].points, s) * run_frames[0].valid
            gts = [f.gt for f in run_frames]
            for mode in ("analytic", "trained"):
                clip_rows[mode].append({"flicker": temporal_flicker([getattr(f, mode) for f in run_frames], gts, m)})
        summary = {"clip": clip.row.file, "person": clip.row.person_id}
        for mode in ("analytic", "trained"):
            self_rows[mode] += clip_rows[mode]
            summary[mode] = _mean(clip_rows[mode])
        per_clip.append(summary)
    showcase.sort(key=lambda x: -x[0])
    _write_grid(grids_dir / "self_reenactment_open_mouth.png", [g for _, g in showcase[:8]])
    _write_grid(grids_dir / "self_reenactment_random.png",
                [random_rows[int(j)] for j in rng.choice(len(random_rows), min(8, len(random_rows)), replace=False)])

    # --- cross-reenactment through the Animator -------------------------------------------------------------
    people: dict[str, list[Any]] = {}
    for c in clips:
        people.setdefault(c.row.person_id, []).append(c)
    names = sorted(people)
    cross_rows: dict[str, list[dict[str, float]]] = {"analytic": [], "trained": []}
    cross_grid: list[np.ndarray] = []
    pairs = [(a, b) for a in names for b in names if a != b]
    chosen = [pairs[int(j)] for j in rng.choice(len(pairs), min(cfg.cross_pairs, len(pairs)), replace=False)]
    for a, b in tqdm(chosen, desc="cross-reenactment", unit="pair", disable=not progress):
        clip_a, clip_b = people[a][0], people[b][0]
        src_i = int(np.flatnonzero(clip_a.found)[0])
        photo = _frames_of(data_dir / clip_a.row.file, {src_i})[src_i]
        found_b = np.flatnonzero(clip_b.found)
        anim = Animator(AnimatorConfig(crop_size_px=s, output="crop", engine="analytic",
                                       warp=WarpConfig(lid_slide=cfg.lid_slide)))
        try:
            source = anim.prepare(photo)
        except EnlivenError as e:
            log.warning("cross %s <- %s: %s", a, b, e)
            continue
        runner.prepare(source.crop)
        src_emb = dlib_id.embed(source.crop, source.points)
        picks = found_b[np.unique(np.linspace(0, len(found_b) - 1, min(cfg.frames_per_clip, len(found_b))).astype(int))]
        outs: dict[str, list[np.ndarray]] = {"analytic": [], "trained": []}
        drv_pts, out_pts_first = [], {}
        rows_pair: dict[str, list[dict[str, float]]] = {"analytic": [], "trained": []}
        pick_set = set(picks.tolist())
        n_pick = 0
        for i in found_b:
            analytic = anim.step_landmarks(clip_b.points[i], t=i / clip_b.fps)
            if i not in pick_set:
                continue
            n_pick += 1
            driven = anim.last.driven_points
            trained = runner.refine(analytic, driven)
            drv_pts.append(clip_b.points[i])
            for mode, img in (("analytic", analytic), ("trained", trained)):
                outs[mode].append(img)
                row: dict[str, float] = {}
                pts = mesh(img)
                if pts is not None:
                    if mode not in out_pts_first:
                        out_pts_first[mode] = (pts, clip_b.points[i])
                    p0, d0 = out_pts_first[mode]
                    row["pose_error_deg"] = float(np.abs((head_angles(pts) - head_angles(p0))
                                                         - (head_angles(clip_b.points[i]) - head_angles(d0))).mean())
                    canon = load_canonical().points
                    e_out = FaceState.measure(pts, canon).shape - FaceState.measure(p0, canon).shape
                    e_drv = (FaceState.measure(clip_b.points[i].astype(np.float64), canon).shape
                             - FaceState.measure(d0.astype(np.float64), canon).shape)
                    row["expression_error"] = float(np.linalg.norm((e_out - e_drv)[EXPRESSION_POINTS], axis=1).mean())
                    if (n_pick - 1) % max(cfg.csim_every, 1) == 0:
                        row["csim_to_source"] = dlib_id.cosine(dlib_id.embed(img, pts), src_emb)
                else:
                    row["face_missed"] = 1.0
                row.setdefault("face_missed", 0.0)
                rows_pair[mode].append(row)
        anim.close()
        m = face_mask(source.points, s)
        for mode in ("analytic", "trained"):
            rows_pair[mode].append({"flicker": temporal_flicker(outs[mode][:cfg.flicker_frames], None, m)})
            cross_rows[mode] += rows_pair[mode]
        if outs["trained"]:
            j = int(np.argmax([topo.mouth_opening(p) for p in drv_pts]))
            from ..engine.render import draw_landmarks

            drv_full = drv_pts[j]
            tb = crop_transform(drv_full, s)
            drawing = draw_landmarks(tb.points_to_crop(drv_full), s)
            cross_grid.append(np.concatenate([source.crop, drawing, outs["analytic"][j], outs["trained"][j]], 1))
    _write_grid(grids_dir / "cross_reenactment.png", cross_grid[:8])

    # --- the public grid: the built-in photo driven by val clips (drivers shown as landmarks) -------------------
    public = _public_grid(clips, data_dir, s, runner, rng)
    timings_summary_extra: dict[str, dict[str, float]] = {}
    flops, enc_flops = count_flops(model)
    for k, v in generator_cost(model, cfg.weights, cfg.precision).items():
        timings_summary_extra[k] = v
    report = {
        "split": cfg.split, "config": asdict(cfg),
        "generator": {"weights": cfg.weights or "shipped", "backend": runner.provider, "precision": cfg.precision,
                      "gflop_per_frame": flops / 1e9,
                      "gflop_per_photo": enc_flops / 1e9, "params_decoder": count_params(model.decoder),
                      "params_encoder": count_params(model.encoder), "resolution_px": model.config.resolution_px},
        "self_reenactment": {m: _mean(r) for m, r in self_rows.items()},
        "cross_reenactment": {m: _mean(r) for m, r in cross_rows.items()},
        "cost_ms": {**{k: {"p50": float(np.median(v)), "p95": float(np.percentile(v, 95))}
                       for k, v in timings.items() if v},
                    **{f"decoder_{k}": v for k, v in timings_summary_extra.items()}},
        "frames": {"self": len(self_rows["trained"]), "cross": len(cross_rows["trained"]),
                   "clips": len(per_clip), "cross_pairs": len(chosen)},
        "per_clip": per_clip,
        "grids": {"val_people_outside_repo": str(grids_dir).replace(str(Path.home()), "~"), "public": public},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor(),
                    "threads": torch.get_num_threads()},
    }
    # --- quality v2: blinks, open mouths, colour, stillness (enliven/evaluate/regions.py) ----------------------
    report.update(report_sections(clips, data_dir, s, runner, cfg.weights, cfg.backend, cfg.precision, cfg.lid_slide,
                                  progress))
    if out_json is not None:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(report, indent=1))
    return report


def _write_grid(path: Path, rows: list[np.ndarray]) -> None:
    if rows:
        params = [cv2.IMWRITE_JPEG_QUALITY, 88] if path.suffix == ".jpg" else []
        cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR), params)


def generator_cost(model: Any, weights: str | None = None, precision: str = "fp32",
                   iterations: int = 200) -> dict[str, dict[str, float]]:
    """Per-frame decoder time (p50/p95 ms, batch 1) in torch and ONNX Runtime (``precision``), 1 and 2 threads."""
    from ..export.cache import ensure_exported
    from ..engine.refine import DECODER_INPUTS, DECODER_OUTPUTS
    from ..engine.runtime import OnnxModel, RuntimeConfig, TorchModel

    r = model.config.resolution_px
    rng = np.random.default_rng(0)
    feed = {"warped": rng.random((1, 3, r, r), np.float32), "drawing": rng.random((1, 3, r, r), np.float32),
            "gate": rng.random((1, 1, r, r), np.float32),
            "code": rng.standard_normal((1, model.config.code_dim)).astype(np.float32)}
    graphs = ensure_exported(Path(weights) if weights else None, precision)  # type: ignore[arg-type]
    out: dict[str, dict[str, float]] = {}
    for n in (1, 2):
        runners = {f"torch_{n}_thread": TorchModel(model.decoder, DECODER_INPUTS, DECODER_OUTPUTS, threads=n),
                   f"onnxruntime_{precision}_{n}_thread": OnnxModel(graphs.decoder, RuntimeConfig(intra_op_threads=n))}
        for name, m in runners.items():
            for _ in range(20):
                m(**feed)
            ts = []
            for _ in range(iterations):
                t0 = time.perf_counter()
                m(**feed)
                ts.append((time.perf_counter() - t0) * 1e3)
            out[name] = {"p50": float(np.median(ts)), "p95": float(np.percentile(ts, 95))}
    return out


def _public_grid(clips: list[Any], data_dir: Path, s: int, runner: Any, rng: np.random.Generator) -> list[np.ndarray]:
    """Rows photo | driver landmarks | analytic | trained for the built-in photo driven by val clips."""
    from ..animation.animator import Animator, AnimatorConfig
    from ..engine.compose import crop_transform
    from ..engine.defaults import builtin_photo
    from ..engine.render import draw_landmarks

    rows = []
    anim = Animator(AnimatorConfig(crop_size_px=s, output="crop", engine="analytic"))
    source = anim.prepare(builtin_photo())
    runner.prepare(source.crop)
    for clip in [clips[int(j)] for j in rng.choice(len(clips), min(4, len(clips)), replace=False)]:
        anim.prepare(builtin_photo())
        found = np.flatnonzero(clip.found)
        opening = [topo.mouth_opening(clip.points[i]) for i in found]
        best = int(found[int(np.argmax(opening))])
        out = None
        for i in found[found <= best]:
            out = anim.step_landmarks(clip.points[i], t=i / clip.fps)
        if out is None:
            continue
        trained = runner.refine(out, anim.last.driven_points)
        drv = clip.points[best]
        drawing = draw_landmarks(crop_transform(drv, s).points_to_crop(drv), s)
        rows.append(np.concatenate([source.crop, drawing, out, trained], axis=1))
    anim.close()
    return rows


# --- Markdown ------------------------------------------------------------------------------------------------------

SELF_COLUMNS = (("l1_face", "L1 face", "{:.4f}", -1), ("psnr_face", "PSNR face dB", "{:.2f}", 1),
                ("ssim_face", "SSIM face", "{:.4f}", 1), ("perceptual_face", "perc. face", "{:.4f}", -1),
                ("l1_mouth", "L1 mouth", "{:.4f}", -1), ("l1_crop", "L1 crop", "{:.4f}", -1),
                ("psnr_crop", "PSNR crop", "{:.2f}", 1), ("ssim_crop", "SSIM crop", "{:.4f}", 1),
                ("perceptual_crop", "perc. crop", "{:.4f}", -1), ("akd_px", "AKD px", "{:.2f}", -1),
                ("expression_error", "expr. err", "{:.4f}", -1), ("csim", "CSIM", "{:.4f}", 1),
                ("flicker", "flicker", "{:.4f}", -1))
CROSS_COLUMNS = (("csim_to_source", "CSIM to A", "{:.4f}", 1), ("pose_error_deg", "pose err deg", "{:.2f}", -1),
                 ("expression_error", "expr. err", "{:.4f}", -1), ("flicker", "flicker", "{:.4f}", -1),
                 ("face_missed", "face missed", "{:.3f}", -1))


def markdown_table(results: dict[str, dict[str, float]], columns: tuple[tuple[str, str, str, int], ...]) -> str:
    """A Markdown table, one row per mode; the better value of each column in bold."""
    head = "| mode | " + " | ".join(c[1] for c in columns) + " |"
    sep = "|---|" + "---|" * len(columns)
    lines = [head, sep]
    for mode, vals in results.items():
        cells = []
        for key, _, fmt, better in columns:
            v = vals.get(key)
            if v is None or not np.isfinite(v):
                cells.append("-")
                continue
            others = [r.get(key) for r in results.values() if r.get(key) is not None]
            best = max(others) if better > 0 else min(others)
            text = fmt.format(v)
            cells.append(f"**{text}**" if len(others) > 1 and v == best else text)
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: Path) -> Path:
    """Write quality.json, report.md and the public grid PNG into ``out_dir``; returns the Markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    public = report["grids"].pop("public", [])
    grid_name = "public_grid.jpg"
    _write_grid(out_dir / grid_name, public)
    report["grids"]["public"] = grid_name if public else None
    (out_dir / "quality.json").write_text(json.dumps(report, indent=1))
    g = report["generator"]
    cost = report.get("cost_ms", {})
    lines = [
        "# Quality on split=val (generated by `enliven evaluate`)", "",
        f"Generator: {g['weights']} at {g['resolution_px']} px, {g['gflop_per_frame']:.3f} GFLOP per frame, "
        f"{g['params_decoder'] + g['params_encoder']:,} parameters. "
        f"{report['frames']['self']} self-reenactment frames from {report['frames']['clips']} clips, "
        f"{report['frames']['cross']} cross-reenactment frames from {report['frames']['cross_pairs']} pairs.", "",
        "## Self-reenactment (source = first frame, driven by the same clip; off-frame pixels excluded)", "",
        markdown_table(report["self_reenactment"], SELF_COLUMNS), "",
        "## Cross-reenactment (first frame of A driven by a clip of B, through the Animator)", "",
        markdown_table(report["cross_reenactment"], CROSS_COLUMNS), "",
        "## Cost per frame (this machine; busy with other jobs while measured)", "",
        "| stage | p50 ms | p95 ms |", "|---|---|---|",
        *[f"| {k} | {v['p50']:.2f} | {v['p95']:.2f} |" for k, v in cost.items()], "",
        f"warp_ms: Warper.warp + fill_mouth_gap at 256; generator_ms: the runner per frame ({g.get('backend')}, "
        f"{g.get('precision')}; inputs at 128, "
        "decoder, delta upsampled and added); the rows below: the decoder alone, batch 1.", "",
        "## Grid", "",
        "The built-in photo (public domain) driven by val clips; the driver is shown as its landmark drawing only "
        "(val people's pixels stay out of the repo; their grids are written to "
        f"`{report['grids']['val_people_outside_repo']}`). Columns: source | driver | analytic | trained.", "",
        f"![public grid]({grid_name})" if public else "(no grid)", "",
    ]
    lines += report_markdown(report)  # blinks, open mouths, colour, stillness (regions.py)
    md = out_dir / "report.md"
    md.write_text("\n".join(lines))
    return md
