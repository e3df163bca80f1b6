"""``enliven cam``: the animated photo as a camera, for video calls.

    webcam (OpenCV) --> Animator.step (landmarks, motion, warp, generator; the face crop)
        --> "AI-generated" label + invisible watermark --> virtual camera (pyvirtualcam)

Video-call apps pick the virtual camera like any other. pyvirtualcam is the optional ``cam`` extra; it needs
a virtual camera device: v4l2loopback on Linux (a kernel module), OBS Studio's Virtual Camera on Windows
and macOS. Without either, ``enliven cam`` says in one line what to install. The frames carry the same
disclosure as the live server's: the visible label (no option removes it) and the watermark that
``enliven verify`` finds in a recording of the call.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .animation.animator import Animator, AnimatorConfig
from .engine.choices import DEFAULT_CROP_SIZE_PX, DEFAULT_ENGINE, EngineName
from .engine.defaults import builtin_photo
from .engine.disclosure import stamp_disclosure
from .engine.errors import EnlivenError
from .engine.image_io import load_photo
from .engine.motion import TransferMode
from .provenance.watermark import Watermarker

logger = logging.getLogger(__name__)

MAX_MISSED_FRAMES = 60  # the webcam gave nothing this many times in a row: it is gone
INSTALL_PYVIRTUALCAM = "enliven cam needs pyvirtualcam: pip install 'enliven[cam]' (or pip install pyvirtualcam)"
INSTALL_DEVICE = ("no virtual camera device: on Linux install and load v4l2loopback (sudo apt-get install "
                  "v4l2loopback-dkms; sudo modprobe v4l2loopback exclusive_caps=1), on Windows or macOS install "
                  "OBS Studio and start its Virtual Camera once")


class CamError(EnlivenError):
    """The webcam or the virtual camera cannot be used."""

    code = "camera"


@dataclass(frozen=True)
class CamConfig:
    camera: int = 0  # the real webcam, as OpenCV numbers them
    size_px: int = DEFAULT_CROP_SIZE_PX  # side of the square output: the animated face crop
    fps: float = 30.0  # frames per second of the virtual camera (and asked of the webcam)
    engine: EngineName = DEFAULT_ENGINE  # "trained" or "analytic"
    mode: TransferMode = TransferMode.RELATIVE  # relative or absolute head pose
    device: str | None = None  # the virtual camera device, e.g. /dev/video10; None: the first one found


class FrameSource(Protocol):
    def read(self) -> np.ndarray | None:
        """The next frame, (H, W, 3) uint8 RGB, or None when none came."""

    def close(self) -> None: ...


class FrameSink(Protocol):
    device: str  # what video-call apps list

    def send(self, frame: np.ndarray) -> None:
        """Show one (S, S, 3) uint8 RGB frame."""

    def sleep_until_next_frame(self) -> None: ...

    def close(self) -> None: ...


class Webcam:
    """A real webcam through OpenCV (640x480 asked for)."""

    def __init__(self, index: int, fps: float) -> None:
        import cv2

        self._cv2 = cv2
        self._capture = cv2.VideoCapture(index)
        if not self._capture.isOpened():
            raise CamError(f"cannot open webcam {index}: is it connected, and not in use by another program?")
        self._capture.set(cv2.CAP_PROP_FRAME_WIDTH, 640)
        self._capture.set(cv2.CAP_PROP_FRAME_HEIGHT, 480)
        self._capture.set(cv2.CAP_PROP_FPS, fps)

    def read(self) -> np.ndarray | None:
        ok, bgr = self._capture.read()
        return self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB) if ok and bgr is not None else None

    def close(self) -> None:
        self._capture.release()


class VirtualCamera:
    """A pyvirtualcam camera of square RGB frames."""

    def __init__(self, camera: Any) -> None:
        self._camera = camera
        self.device = str(camera.device)

    def send(self, frame: np.ndarray) -> None:
        self._camera.send(frame)

    def sleep_until_next_frame(self) -> None:
        self._camera.sleep_until_next_frame()

    def close(self) -> None:
        self._camera.close()


def open_virtual_camera(size_px: int, fps: float, device: str | None = None) -> VirtualCamera:
    """Raises CamError, naming what to install, when pyvirtualcam or a virtual camera device is missing."""
    try:
        import pyvirtualcam
    except ImportError as e:
        raise CamError(INSTALL_PYVIRTUALCAM) from e
    try:
        camera = pyvirtualcam.Camera(size_px, size_px, fps, device=device, fmt=pyvirtualcam.PixelFormat.RGB)
    except (RuntimeError, ValueError) as e:  # pyvirtualcam's "no backend/device found" kinds
        raise CamError(f"{INSTALL_DEVICE} ({str(e).strip().splitlines()[0][:120] if str(e).strip() else e!r})") from e
    return VirtualCamera(camera)


def photo_or_builtin(path: str | None) -> np.ndarray:
    """The photo at ``path`` ((H, W, 3) uint8 RGB), or the built-in one. Raises the engine's image errors."""
    return builtin_photo() if path is None else load_photo(path)


@dataclass(frozen=True)
class CamReport:
    frames: int  # frames sent to the virtual camera
    seconds: float
    face_frames: int  # of them, with the driver's face seen

    def summary(self) -> str:
        fps = self.frames / self.seconds if self.seconds > 0 else 0.0
        return (f"enliven cam: {self.frames} frames in {self.seconds:.1f} s ({fps:.1f} fps), "
                f"face seen in {self.face_frames}")


def run_cam(photo: np.ndarray, source: FrameSource, sink: FrameSink, config: CamConfig,
            should_stop: Callable[[], bool] = lambda: False, max_frames: int | None = None) -> CamReport:
    """Animate ``photo`` ((H, W, 3) uint8 RGB) with ``source``'s frames into ``sink`` until ``should_stop()``,
    ``max_frames`` or the webcam stops (CamError after MAX_MISSED_FRAMES empty reads in a row).

    Raises: NoFaceError, FaceTooSmallError (the photo), CamError.
    """
    animator = Animator(AnimatorConfig(crop_size_px=config.size_px, mode=config.mode, output="crop",
                                       engine=config.engine))
    watermark = Watermarker()
    frames = faces = missed = 0
    try:
        animator.prepare(photo)
        t0 = time.monotonic()
        while not should_stop() and (max_frames is None or frames < max_frames):
            rgb = source.read()
            if rgb is None:
                missed += 1
                if missed >= MAX_MISSED_FRAMES:
                    raise CamError(f"the webcam sent no frame {MAX_MISSED_FRAMES} times in a row")
                time.sleep(0.01)
                continue
            missed = 0
            out = np.array(animator.step(rgb, t=time.monotonic() - t0))
            stamp_disclosure(out)
            watermark.embed(out, in_place=True)
            sink.send(out)
            frames += 1
            faces += int(animator.last.face_found)
            sink.sleep_until_next_frame()
        return CamReport(frames, time.monotonic() - t0, faces)
    finally:
        animator.close()
