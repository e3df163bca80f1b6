"""The Animator: one per stream. prepare(photo) once, then step(frame) for every driving frame.

    photo --prepare--> Source (face, crop, pose, warp tables)
    frame --landmarks--> smoothing --motion (vs the driver's reference)--> retarget
          --warp--> [generator] --> relight --paste-back--> output frame
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from ..engine.blink import BlinkClock
from ..engine.canonical import load_canonical
from ..engine.choices import DEFAULT_ENGINE, DEFAULT_REFINER, ENGINE_CROP_SIZES_PX, ENGINES, FACE_REFINERS, EngineName
from ..engine.compose import CropTransform, PasteBack, crop, crop_transform
from ..engine.contract import contract_for
from ..engine.errors import ShapeError
from ..engine.landmarks import LandmarkSmoother, LandmarkTracker, PhotoFace, SmoothingConfig, detect_photo_face
from ..engine.motion import (DriverReference, EyesMode, FaceState, Motion, MotionGains, MotionLimits, TransferMode,
                             fit_pose, gaze_reliability, measure_motion, retarget)
from ..engine.patches import PatchRunner
from ..engine.procedural import blink
from ..engine.refine import GeneratorRunner
from ..engine.relight import LightConfig, Relighter
from ..engine.warp import Warper, WarpConfig, fill_mouth_gap, lip_color, remap_source
from ..export.patches import open_patch_runner
from ..export.runner import open_runner, shipped_refiner_warps

STAGES = ("landmarks", "motion", "warp", "generator", "patches", "relight", "paste_back")  # "patches": eye/mouth
# refiners, "relight": the shading that turns with the head (0 when off)


@dataclass(frozen=True)
class AnimatorConfig:
    crop_size_px: int = 256  # side of the aligned face crop the engine animates (256 or 512)
    mode: TransferMode = TransferMode.RELATIVE  # relative (default) or absolute head pose
    output: Literal["photo", "crop"] = "photo"  # full photo at its own resolution, or the crop only
    gains: MotionGains = MotionGains()  # per-channel strength: head rotation/position, eyes, gaze, brows, mouth
    eyes: EyesMode = EyesMode.FOLLOW  # the lids: as the driver's, kept as in the photo ("open"), or "auto-blink"
    blink_seed: int | None = None  # seed of the auto-blink rhythm (None: a different rhythm each time)
    limits: MotionLimits | None = MotionLimits()  # how far the head may go from the photo's pose (None: no limit)
    smoothing: SmoothingConfig = SmoothingConfig()  # One-Euro settings of the driver landmarks
    warp: WarpConfig = WarpConfig()
    calibration_s: float = 1.0  # the most neutral driver frame of this first window is the reference
    lost_ease_s: float = 0.15  # time constant of the ease back to neutral when the face is lost (~95% in 0.45 s)
    regain_s: float = 0.25  # after the face returns, motion blends in over this long (no jump)
    fps: float = 30.0  # assumed frame rate when step() is given no timestamp
    engine: EngineName = DEFAULT_ENGINE  # "trained": the shipped learned generator refines the warp; "analytic": none
    generator: str = DEFAULT_REFINER  # the shipped face refiner: "refiner128" (the best on val) or "refiner128s"
    # (its distilled student: ~40 % less decoder time, val face PSNR -0.06 dB; the live server's default)
    generator_weights: str | None = None  # a generator weights file to use instead of the shipped one
    backend: Literal["onnxruntime", "torch"] = "onnxruntime"  # what runs the generator (graphs exported on first use)
    precision: Literal["fp32", "fp16", "int8"] = "fp32"  # of the generator's per-frame graph (onnxruntime only)
    generator_threads: int | None = None  # threads of the generator; None: the usable cores, at most 4
    eye_patch_weights: str | None = "auto"  # eye patch refiner (refines closing eyes; trained engine):
    # "auto": the shipped one where it applies (trained engine with the shipped face refiner), else off;
    # "shipped", a weights file, or None (off). ``eye_patch`` is what it resolves to.
    mouth_patch_weights: str | None = None  # mouth patch refiner weights, the same way: refines opening mouths
    relight: LightConfig | None = LightConfig()  # the photo's light re-applied as the head turns (relight.py): None off

    def __post_init__(self) -> None:
        if self.crop_size_px not in ENGINE_CROP_SIZES_PX:
            raise ValueError(f"crop_size_px must be one of {ENGINE_CROP_SIZES_PX}; got {self.crop_size_px}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}; got {self.engine!r}")
        if self.backend not in ("onnxruntime", "torch"):
            raise ValueError(f"backend must be 'onnxruntime' or 'torch'; got {self.backend!r}")
        if self.precision not in ("fp32", "fp16", "int8") or (self.backend == "torch" and self.precision != "fp32"):
            raise ValueError(f"precision must be fp32, fp16 or int8 (fp32 with torch); got {self.precision!r}")
        if not isinstance(self.gains, MotionGains):
            raise ValueError(f"gains must be a MotionGains; got {type(self.gains).__name__}")
        try:
            object.__setattr__(self, "eyes", EyesMode(self.eyes))
        except ValueError as e:
            raise ValueError(f"eyes must be one of {[m.value for m in EyesMode]}; got {self.eyes!r}") from e
        if self.generator not in FACE_REFINERS:
            raise ValueError(f"generator must be one of {FACE_REFINERS}; got {self.generator!r}")
        if (self.eye_patch_weights not in (None, "auto") or self.mouth_patch_weights) and self.engine != "trained":
            raise ValueError("patch refiners run in the trained engine")
        if self.engine == "trained" and self.warp.version not in shipped_refiner_warps(self.generator) \
                and self.generator_weights is None:
            raise ValueError(f"no shipped refiner is valid on warp version {self.warp.version}; "
                             "use engine='analytic', or generator_weights "
                             "trained on it")

    @property
    def eye_patch(self) -> str | None:
        """The eye patch refiner this config runs: "shipped", a weights file, or None (off); see eye_patch_weights."""
        if self.eye_patch_weights != "auto":
            return self.eye_patch_weights
        applies = self.engine == "trained" and self.generator_weights is None
        return "shipped" if applies else None


@dataclass(frozen=True)
class Source:
    """Everything derived once from the source photo."""

    photo: np.ndarray  # (H, W, 3) uint8 RGB, the photo as given
    face: PhotoFace  # landmarks in photo pixels, detector box, face count
    transform: CropTransform  # photo -> crop
    crop: np.ndarray  # (S, S, 3) uint8 aligned crop
    points: np.ndarray  # (478, 3) float64 landmarks in crop pixels
    state: FaceState  # pose and pose-free shape in the crop
    lip_color: np.ndarray  # (3,) float32 mean RGB of the lips
    blink: np.ndarray  # (478, 3) float64 canonical units: the expression offsets that close its eyes


@dataclass
class StepInfo:
    """What happened in the last step (for stats, tests and benchmarks)."""

    face_found: bool = False
    driven_points: np.ndarray | None = None  # (478, 3) float64 crop pixels
    driver_points: np.ndarray | None = None  # (478, 3) float32 driver-frame pixels
    timings_ms: dict[str, float] = field(default_factory=dict)


class Animator:
    """Animates one photo with one driving stream. Not thread-safe: one per session/stream."""

    def __init__(self, config: AnimatorConfig | None = None) -> None:
        self.config = config or AnimatorConfig()
        self.canonical = load_canonical().points
        self._tracker: LandmarkTracker | None = None
        self._smoother = LandmarkSmoother(self.config.smoothing)  # step_landmarks(..., smooth=True)
        self._refiner: GeneratorRunner | None = None
        self._patches: PatchRunner | None = None
        self.source: Source | None = None
        self.last = StepInfo()
        self._reset_motion()

    # --- source -----------------------------------------------------------------------------
    def prepare(self, photo: np.ndarray) -> Source:
        """Detect the face of ``photo`` ((H, W, 3) uint8 RGB) and get everything ready to animate it.

        Raises: NoFaceError, FaceTooSmallError, ShapeError.
        """
        face = detect_photo_face(photo)
        size = self.config.crop_size_px
        transform = crop_transform(face.landmarks, size)
        face_crop = crop(photo, transform)
        points = transform.points_to_crop(face.landmarks)
        state = FaceState.measure(points, self.canonical)
        self.source = Source(photo, face, transform, face_crop, points, state, lip_color(face_crop, points),
                             blink(state.shape, 1.0) - state.shape)
        self._warper = Warper(points, size, self.config.warp)
        self._relighter = Relighter(face_crop, points, self.config.relight) if self.config.relight else None
        self._paste = PasteBack(photo, transform) if self.config.output == "photo" else None
        cfg = self.config
        if cfg.engine == "trained":
            if self._refiner is None:
                self._refiner = open_runner(cfg.generator_weights, cfg.backend, cfg.precision, cfg.generator_threads,
                                            contract_for(cfg.warp.version), generator=cfg.generator)
            self._refiner.prepare(face_crop)  # the source encoder runs once per photo
            if (cfg.eye_patch or cfg.mouth_patch_weights) and self._patches is None:
                self._patches = open_patch_runner(cfg.eye_patch, cfg.mouth_patch_weights, cfg.generator_threads,
                                                  contract_for(cfg.warp.version))
        self._reset_motion()
        return self.source

    # --- driving ----------------------------------------------------------------------------
    def set_mode(self, mode: TransferMode) -> None:
        """Switch relative/absolute transfer live, keeping the driver's calibrated reference."""
        self.config = replace(self.config, mode=TransferMode(mode))

    def set_gains(self, gains: MotionGains) -> None:
        """Change the per-channel strengths live (from the next frame on)."""
        if not isinstance(gains, MotionGains):
            raise ValueError(f"gains must be a MotionGains; got {type(gains).__name__}")
        self.config = replace(self.config, gains=gains)

    def set_eyes(self, eyes: EyesMode | str) -> None:
        """Switch the lids live between "follow", "open" and "auto-blink"."""
        self.config = replace(self.config, eyes=EyesMode(eyes))

    def reset_reference(self) -> None:
        """Take the driver's next frames as its new neutral reference (a 'calibrate' button)."""
        self._reference.reset()

    def _reset_motion(self) -> None:
        self._smoother.reset()
        self._reference = DriverReference(self.canonical, self.config.calibration_s)
        self._motion = Motion.zero()
        self._last_t: float | None = None
        self._lost_since: float | None = None
        self._regain_until = -math.inf
        self._blinks = BlinkClock(self.config.blink_seed)

    def step(self, frame: np.ndarray, t: float | None = None) -> np.ndarray:
        """Animate the source with one driving frame ((H, W, 3) uint8 RGB) taken at ``t`` seconds.

        Returns the output frame: the photo (H, W, 3) uint8 at its own size, or the (S, S, 3) crop.
        When no face is seen the output eases back to the source's own pose.
        """
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ShapeError(f"expected an (H, W, 3) uint8 RGB frame; got {frame.shape} {frame.dtype}")
        t = self._clock(t)
        t0 = time.perf_counter()
        if self._tracker is None:
            self._tracker = LandmarkTracker(self.config.smoothing)
        points = self._tracker.track(frame, t)
        self.last.timings_ms = {"landmarks": (time.perf_counter() - t0) * 1e3}
        return self._animate(points, t)

    def step_landmarks(self, points: np.ndarray | None, t: float | None = None, smooth: bool = False) -> np.ndarray:
        """Like ``step`` but driven by landmarks already measured ((478, 3) pixels, or None = no face).

        ``smooth``: pass them through the One-Euro smoothing ``step`` applies to its own measurements
        (for raw landmarks measured elsewhere, e.g. by MediaPipe in a browser); off for landmarks that
        are smooth already (offline tracking, the built-in motion).
        """
        t = self._clock(t)
        t0 = time.perf_counter()
        if smooth:
            points = self._smoother(points, t)
        self.last.timings_ms = {"landmarks": (time.perf_counter() - t0) * 1e3}
        return self._animate(points, t)

    def _clock(self, t: float | None) -> float:
        if t is not None:
            return float(t)
        return 0.0 if self._last_t is None else self._last_t + 1.0 / self.config.fps

    def _animate(self, points: np.ndarray | None, t: float) -> np.ndarray:
        if self.source is None:
            raise RuntimeError("call prepare(photo) before step()")
        timings = self.last.timings_ms
        t0 = time.perf_counter()
        self._motion = self._update_motion(points, t)
        driven = retarget(self.source.state, self._motion, self.config.mode, self.config.gains,
                          limits=self.config.limits, eye_offsets=self._eye_offsets(t))
        t1 = time.perf_counter()
        pose = fit_pose(driven, self.canonical)  # the driven head's pose, for the warp and the relight
        flow = self._warper.flow(driven, pose)  # the Warper's buffer: valid until its next flow, after the relight
        out = remap_source(self.source.crop, flow)
        fill_mouth_gap(out, driven, self._warper.mouth(driven), self.source.lip_color)
        t2 = time.perf_counter()
        if self._refiner is not None:
            out = self._refiner.refine(out, driven)
        t_refined = time.perf_counter()
        if self._patches is not None:
            out = self._patches.refine(out, driven, self.source.crop, self.source.points,
                                       self._refiner.chroma if self._refiner is not None else None)
        t3 = time.perf_counter()
        if self._relighter is not None:
            out = self._relighter.apply(out, flow, driven, pose)
        t_relit = time.perf_counter()
        if self._paste is not None:
            out = self._paste(out)
        t4 = time.perf_counter()
        timings.update(motion=(t1 - t0) * 1e3, warp=(t2 - t1) * 1e3, generator=(t_refined - t2) * 1e3,
                       patches=(t3 - t_refined) * 1e3, relight=(t_relit - t3) * 1e3, paste_back=(t4 - t_relit) * 1e3)
        self.last.face_found = points is not None
        self.last.driven_points = driven
        self.last.driver_points = points
        return out

    def _eye_offsets(self, t: float) -> np.ndarray | None:
        """What the eyes channel shows when it does not follow the driver: the photo's own lids, or a blink."""
        assert self.source is not None
        eyes = self.config.eyes
        if eyes is EyesMode.FOLLOW:
            return None
        amount = self._blinks.amount(t) if eyes is EyesMode.AUTO_BLINK else 0.0
        return amount * self.source.blink

    def _update_motion(self, points: np.ndarray | None, t: float) -> Motion:
        """The motion to show now: measured, eased to neutral while the face is lost, blended back in."""
        dt = 0.0 if self._last_t is None else max(t - self._last_t, 0.0)
        self._last_t = t
        cfg = self.config
        if points is None:
            if self._lost_since is None:
                self._lost_since = t
            w = 1.0 - math.exp(-dt / cfg.lost_ease_s)
            return self._motion.lerp(Motion.zero(), w)
        if self._lost_since is not None:
            self._lost_since = None
            self._regain_until = t + cfg.regain_s
        face = FaceState.measure(points, self.canonical)
        reference = self._reference.update(face, t)
        measured = measure_motion(face, reference)
        # While the driver's lids close, its irises are not seen: hold the gaze it had.
        trust = gaze_reliability(face, reference)
        measured = replace(measured, gaze=self._motion.gaze + trust * (measured.gaze - self._motion.gaze))
        if t < self._regain_until:
            remaining = self._regain_until - t
            w = min(1.0, dt / max(remaining, 1e-6)) if dt > 0 else 0.0
            return self._motion.lerp(measured, w)
        return measured

    @property
    def warper(self) -> Warper:
        """The backward warp of the prepared photo (its ``flow`` gives the remap table of driven points).

        Raises: RuntimeError before ``prepare`` or after ``close``.
        """
        if self.source is None:
            raise RuntimeError("call prepare(photo) first")
        return self._warper

    @property
    def generator_provider(self) -> str | None:
        """Where the learned generator runs, e.g. "CPUExecutionProvider" or "torch:cpu"; None when no
        generator is loaded (engine "analytic", or before the first ``prepare``)."""
        return None if self._refiner is None else self._refiner.provider

    def close(self) -> None:
        """Release MediaPipe and the source photo."""
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None
        self.source = None
        self._paste = None

    def __enter__(self) -> "Animator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
