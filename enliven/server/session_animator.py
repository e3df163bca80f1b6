"""One session's photo and Animator, and the routine every animated frame of a session goes through.

The same code runs in an inference worker process (worker.py, the default) and, with ``--workers 0``,
in the session's thread of the server process (engines.ThreadEngine). Per frame:

    new settings? --> engine or size changed: a new Animator for the same photo (the old one is kept
                      if that fails); mode changed: Animator.set_mode (the driver's reference is kept);
                      gains or eye mode changed: Animator.set_gains / set_eyes
    reset asked?  --> Animator.reset_reference
    Animator.step (a camera frame) or Animator.step_landmarks (a page's face points, smoothed)
                  --> "AI-generated" burned in --> the frame id echoed (latency probes only)
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import cast

import cv2
import numpy as np

from enliven.animation.animator import Animator, AnimatorConfig
from enliven.engine.choices import (
    DEFAULT_CROP_SIZE_PX,
    DEFAULT_ENGINE,
    DEFAULT_REFINER,
    FACE_REFINERS,
    EngineName,
)
from enliven.engine.disclosure import stamp_disclosure
from enliven.engine.image_io import encode_png
from enliven.engine.motion import EyesMode, MotionGains, TransferMode
from enliven.provenance.watermark import Watermarker

from .config import PRECISIONS, Precision
from .frame_ids import stamp_id

logger = logging.getLogger(__name__)

ECHO_ROWS = 16  # rows of the input copied into the output when echo_frame_ids is on (latency probes)
PREVIEW_MAX_SIDE_PX = 1024  # GET /photo: the photo scaled to fit this (encoded once per session)


@dataclass(frozen=True)
class EngineSettings:
    """What the page's controls can change."""

    crop_size_px: int = DEFAULT_CROP_SIZE_PX  # side of the animated face crop, one of choices.CROP_SIZES_PX
    mode: TransferMode = TransferMode.RELATIVE  # relative or absolute head pose
    engine: EngineName = DEFAULT_ENGINE  # one of choices.ENGINES: "trained" (learned refiner) or "analytic"
    gains: MotionGains = MotionGains()  # per-channel strength (head, eyes, gaze, brows, mouth), applied live
    eyes: EyesMode = EyesMode.FOLLOW  # the lids: follow the driver, keep the photo's open, or auto-blink

    def public(self) -> dict[str, object]:
        """The settings as the API and the data channel show them."""
        return {"size": self.crop_size_px, "mode": self.mode.value, "engine": self.engine,
                "gains": self.gains.as_dict(), "eyes": self.eyes.value}


@dataclass(frozen=True)
class DebugOptions:
    """Test and benchmark options of a session (all off in production)."""

    echo_frame_ids: bool = False  # copy the input's top ECHO_ROWS rows into the output (latency probes)
    step_delay_s: float = 0.0  # extra time per frame: a slow generator (backpressure tests)


NO_DEBUG = DebugOptions()


@dataclass(frozen=True)
class InferenceOptions:
    """How a server process runs the trained refiner: the same for all its sessions (not a page control)."""

    precision: Precision = "fp32"  # of the refiner's per-frame graph (the server's default is int8: see config.py)
    threads: int | None = None  # ONNX Runtime intra-op threads per session; None: the usable cores, at most 4.
    #                             With a worker per core, 1: more threads than cores only wait for each other
    generator: str = DEFAULT_REFINER  # the shipped face refiner (the server's default is its student: config.py)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}; got {self.precision!r}")
        if self.generator not in FACE_REFINERS:
            raise ValueError(f"generator must be one of {FACE_REFINERS}; got {self.generator!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1 (or None); got {self.threads}")


FP32 = InferenceOptions()  # the Animator's own defaults


@dataclass(frozen=True)
class AnimatedImage:
    image: np.ndarray  # (S, S, 3) uint8 RGB, the animated face crop with its disclosure label
    face_found: bool  # the driver's face was seen in this frame
    step_ms: float  # wall time of Animator.step (plus the debug delay)
    settings: EngineSettings  # the settings the frame was made with (a refused switch keeps the old ones)


def animator_config(settings: EngineSettings, inference: InferenceOptions = FP32) -> AnimatorConfig:
    """The AnimatorConfig of a session: its face crop only, at the session's size, mode, engine and gains,
    its refiner run as ``inference`` says."""
    return AnimatorConfig(crop_size_px=settings.crop_size_px, mode=settings.mode, output="crop",
                          engine=settings.engine, gains=settings.gains, eyes=settings.eyes,
                          precision=inference.precision, generator_threads=inference.threads,
                          generator=inference.generator)


def preview_png(photo: np.ndarray, max_side_px: int = PREVIEW_MAX_SIDE_PX) -> bytes:
    """The photo ((H, W, 3) uint8 RGB) scaled to fit ``max_side_px`` (never enlarged), as PNG without metadata."""
    h, w = photo.shape[:2]
    scale = max_side_px / max(h, w)
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        photo = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
    return encode_png(photo)


class SessionAnimator:
    """A session's photo and its Animator. Not thread-safe: one thread (or worker process) per session.

    Raises from the constructor: NoFaceError, FaceTooSmallError, ShapeError (the photo is refused).
    ``inference``: how the refiner runs (the server's --precision, threads per worker).
    """

    def __init__(self, photo: np.ndarray, settings: EngineSettings, debug: DebugOptions = NO_DEBUG,
                 inference: InferenceOptions = FP32) -> None:
        self.inference = inference
        animator = Animator(animator_config(settings, inference))
        try:
            source = animator.prepare(photo)
        except BaseException:
            animator.close()
            raise
        self._photo: np.ndarray | None = photo  # (H, W, 3) uint8 RGB, as decoded
        self._preview: bytes | None = None  # preview_png(photo), made on the first photo_png()
        self._animator: Animator | None = animator
        self.settings = settings  # the settings the Animator runs with
        self.debug = debug
        self.face_count = int(source.face.face_count)  # faces the detector saw in the photo
        self._watermark = Watermarker()  # a random id per session, not linked to the photo or the person

    @property
    def photo(self) -> np.ndarray | None:
        """The photo as decoded; None once closed."""
        return self._photo

    def frame(self, rgb: np.ndarray, t_s: float, settings: EngineSettings | None = None,
              reset_reference: bool = False) -> AnimatedImage:
        """Animate one driving frame ((H, W, 3) uint8 RGB, taken at ``t_s`` seconds of the session).

        ``settings``: new settings to apply first (None: unchanged); ``reset_reference``: take the
        driver's next frames as its neutral pose. Raises RuntimeError once closed.
        """
        image = self._animate(lambda animator: animator.step(rgb, t=t_s), settings, reset_reference)
        if self.debug.echo_frame_ids:
            w = min(image.image.shape[1], rgb.shape[1])
            image.image[:ECHO_ROWS, :w] = rgb[:ECHO_ROWS, :w]
        return image

    def points(self, points: np.ndarray | None, t_s: float, frame_id: int, settings: EngineSettings | None = None,
               reset_reference: bool = False) -> AnimatedImage:
        """Animate with the face points a page measured on one camera frame ((478, 3) float32 pixels in
        Animator.step's convention, or None: no face), smoothed as ``step`` smooths its own landmarks.

        ``frame_id``: the page's frame number, drawn into the output when echo_frame_ids is on (latency
        probes). Otherwise as ``frame``.
        """
        image = self._animate(lambda animator: animator.step_landmarks(points, t=t_s, smooth=True), settings,
                              reset_reference)
        if self.debug.echo_frame_ids:
            stamp_id(image.image, frame_id)
        return image

    def _animate(self, step: Callable[[Animator], np.ndarray], settings: EngineSettings | None,
                 reset_reference: bool) -> AnimatedImage:
        """The routine both inputs share: settings, reference, the step (timed), watermark and label."""
        if settings is not None:
            self._apply(settings)
        animator = self._animator
        if animator is None:
            raise RuntimeError("the session's photo is gone")
        if reset_reference:
            animator.reset_reference()
        t0 = time.perf_counter()
        out = step(animator)
        if self.debug.step_delay_s > 0:
            time.sleep(self.debug.step_delay_s)
        step_ms = (time.perf_counter() - t0) * 1e3
        return AnimatedImage(self._labelled(out), bool(animator.last.face_found), step_ms, self.settings)

    def _labelled(self, out: np.ndarray) -> np.ndarray:
        """A writable copy of an animated frame with its disclosure: the visible label and the watermark."""
        out = np.array(out)
        self._watermark.embed(out, in_place=True)  # invisible, survives re-encoding: `enliven verify`
        stamp_disclosure(out)  # after the watermark: the label's pixels stay exactly as drawn
        return out

    def _apply(self, new: EngineSettings) -> None:
        if self._animator is None or self._photo is None:
            raise RuntimeError("the session's photo is gone")
        current = self.settings
        if (new.crop_size_px, new.engine) != (current.crop_size_px, current.engine):
            animator = Animator(animator_config(new, self.inference))
            try:
                animator.prepare(self._photo)
            except Exception as e:  # e.g. no trained weights: keep animating as before
                animator.close()
                logger.warning("cannot switch to %s at %d px: %s", new.engine, new.crop_size_px, type(e).__name__)
            else:
                self._animator.close()
                self._animator, self.settings = animator, new
                return
        if new.mode != self.settings.mode:  # only retargeting reads the mode: keep the calibrated reference
            self._animator.set_mode(new.mode)
            self.settings = replace(self.settings, mode=new.mode)
        if (new.gains, new.eyes) != (self.settings.gains, self.settings.eyes):  # live, from this frame on
            self._animator.set_gains(new.gains)
            self._animator.set_eyes(new.eyes)
            self.settings = replace(self.settings, gains=new.gains, eyes=new.eyes)

    def photo_png(self) -> bytes | None:
        """The photo's preview (preview_png: at most PREVIEW_MAX_SIDE_PX, PNG, no metadata), made once;
        None once closed."""
        if self._photo is None:
            return None
        if self._preview is None:
            self._preview = preview_png(self._photo)
        return self._preview

    def close(self) -> None:
        """Drop the Animator, the photo and its preview. Idempotent."""
        animator, self._animator, self._photo, self._preview = self._animator, None, None, None
        if animator is not None:
            animator.close()


def warm_up(photo: np.ndarray, engines: Iterable[str], inference: InferenceOptions = FP32) -> None:
    """Load MediaPipe and each engine's generator (with the trained engine's eye patch refiner; their ONNX
    graphs are exported on the first run) before users come. A failing engine is logged; sessions asking
    for it get its error."""
    for engine in engines:
        try:
            session = SessionAnimator(photo, EngineSettings(crop_size_px=256, engine=cast(EngineName, engine)),
                                      inference=inference)
            try:
                session.frame(np.zeros((480, 640, 3), np.uint8), t_s=0.0)
            finally:
                session.close()
        except Exception as e:  # the server still starts
            logger.warning("warm-up of the %s engine failed: %s", engine, e)
