"""Face landmarks: MediaPipe FaceMesh (478 points with irises), One-Euro smoothing, photo detection.

Landmarks are (478, 3) float32 arrays in pixels of the image they were measured on:
x right, y down, z = MediaPipe's z times the image width (same units as x; smaller is
closer to the camera).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

# MediaPipe is imported here, not inside the functions that first use it: its import keeps the error of
# an optional audio module, whose traceback holds the importing call stack, and a lazy import in
# detect_photo_face(photo) would keep that first photo alive for the life of the process.
import mediapipe as mp
import numpy as np

from .errors import FaceTooSmallError, NoFaceError, ShapeError

log = logging.getLogger(__name__)

MIN_FACE_PX = 48  # faces narrower than this (detector box width, pixels) are refused


_stderr_lock = threading.RLock()  # re-entrant: a silenced block may contain a tracker's first, silenced run


@contextlib.contextmanager
def native_logs_silenced() -> Iterator[None]:
    """Silence fd 2 while MediaPipe builds a graph and runs it once.

    TFLite and MediaPipe print INFO/WARNING lines straight to the process's stderr from C++
    ("Created TensorFlow Lite XNNPACK delegate", "Feedback manager requires ...") and no
    environment variable of mediapipe 0.10.21 turns them off. Python exceptions are unaffected:
    they are raised after the descriptor is restored. Set ENLIVEN_NATIVE_LOGS=1 to see them.
    """
    if os.environ.get("ENLIVEN_NATIVE_LOGS") == "1":
        yield
        return
    with _stderr_lock:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


def _check_rgb(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ShapeError(f"expected an (H, W, 3) uint8 RGB image; got {image.shape} {image.dtype}")


def _to_pixels(landmarks, width: int, height: int) -> np.ndarray:
    """MediaPipe NormalizedLandmarkList -> (478, 3) float32 pixels."""
    pts = np.array([(p.x, p.y, p.z) for p in landmarks.landmark], dtype=np.float32)
    pts *= np.array([width, height, width], dtype=np.float32)
    return pts


class OneEuroFilter:
    """One-Euro filter (Casiez et al. 2012) applied element-wise to an array signal.

    Low cut-off when the signal is still (no jitter), rising with speed (no lag on fast moves).
    Args: min_cutoff_hz: cut-off at rest; beta: how fast the cut-off rises with speed
    (per unit of the signal per second); d_cutoff_hz: cut-off of the speed estimate.
    """

    def __init__(self, min_cutoff_hz: float = 1.5, beta: float = 0.05, d_cutoff_hz: float = 1.0) -> None:
        self.min_cutoff_hz = min_cutoff_hz
        self.beta = beta
        self.d_cutoff_hz = d_cutoff_hz
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        """Filter one sample ``x`` taken at time ``t`` (seconds); returns the smoothed sample."""
        if self._x is None or self._t is None or t <= self._t:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t
        dx = (x - self._x) / dt
        a_d = self._alpha(self.d_cutoff_hz, dt)
        self._dx = self._dx + a_d * (dx - self._dx)
        cutoff = self.min_cutoff_hz + self.beta * np.abs(self._dx)
        a = self._alpha(cutoff, dt)
        self._x = self._x + a * (x - self._x)
        self._t = t
        return self._x.copy()


@dataclass(frozen=True)
class SmoothingConfig:
    min_cutoff_hz: float = 1.5  # cut-off at rest; lower = steadier, more lag on slow moves
    beta_per_px: float = 0.1  # cut-off rise per (pixel/second) of speed, scaled by face size
    d_cutoff_hz: float = 1.0  # cut-off of the speed estimate


class LandmarkSmoother:
    """One-Euro smoothing of a stream of face landmarks, with its speed threshold scaled by the face's size.

    The smoothing of ``LandmarkTracker``, usable on landmarks measured elsewhere (e.g. in the browser):
    ``smoother(points, t)`` takes (478, 3) float pixels at ``t`` seconds and returns them smoothed
    (float32); ``smoother(None, t)`` (no face) returns None and restarts the filter, so a returning face
    does not glide in from where it vanished.
    """

    def __init__(self, smoothing: SmoothingConfig | None = None) -> None:
        cfg = smoothing or SmoothingConfig()
        self._filter = OneEuroFilter(cfg.min_cutoff_hz, cfg.beta_per_px, cfg.d_cutoff_hz)
        self._beta_per_px = cfg.beta_per_px

    def reset(self) -> None:
        self._filter.reset()

    def __call__(self, points: np.ndarray | None, t: float) -> np.ndarray | None:
        if points is None:
            self._filter.reset()
            return None
        # Speed thresholds scale with the face: a 400 px face jitters more pixels than a 100 px one.
        face_px = float(np.ptp(points[:, 0]))
        self._filter.beta = self._beta_per_px * 100.0 / max(face_px, 1.0)
        return self._filter(np.asarray(points, np.float32), t).astype(np.float32)


class LandmarkTracker:
    """MediaPipe FaceMesh in tracking mode on a video stream, smoothed with a One-Euro filter.

    One tracker per stream (it keeps the previous face to track it). Not thread-safe.
    """

    def __init__(self, smoothing: SmoothingConfig | None = None, smooth: bool = True) -> None:
        with native_logs_silenced():
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=False, max_num_faces=1, refine_landmarks=True,
                min_detection_confidence=0.5, min_tracking_confidence=0.5)
        self._first = True
        self._smoother = LandmarkSmoother(smoothing) if smooth else None
        self._last_frame: np.ndarray | None = None  # the previous frame, to spot a repeated one
        self._last_points: np.ndarray | None = None  # ... and what was returned for it

    def track(self, frame: np.ndarray, t: float) -> np.ndarray | None:
        """Landmarks of the face in ``frame`` ((H, W, 3) uint8 RGB) at time ``t`` (s), or None if no face.

        Returns (478, 3) float32 pixels, smoothed. After a lost face the filter restarts,
        so a returning face does not glide in from where it vanished. A frame identical to the previous
        one (a paused video, a stalled camera repeating its last frame) gets the previous answer: fed the
        same image again, MediaPipe's tracking (which crops around its own last answer) swings by about a
        pixel every other frame, and the output shimmered on a frozen driver (mean |change| 0.29/255 per frame).
        """
        _check_rgb(frame)
        if self._last_frame is not None and self._last_frame.shape == frame.shape \
                and np.array_equal(self._last_frame, frame):
            return None if self._last_points is None else self._last_points.copy()
        self._last_frame = frame.copy()
        self._last_points = self._track(frame, t)
        return None if self._last_points is None else self._last_points.copy()

    def _track(self, frame: np.ndarray, t: float) -> np.ndarray | None:
        if self._first:  # the first run prints the TFLite delegate lines
            with native_logs_silenced():
                result = self._mesh.process(frame)
            self._first = False
        else:
            result = self._mesh.process(frame)
        pts = None
        if result.multi_face_landmarks:
            pts = _to_pixels(result.multi_face_landmarks[0], frame.shape[1], frame.shape[0])
        return pts if self._smoother is None else self._smoother(pts, t)

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> "LandmarkTracker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class PhotoFace:
    """The face chosen in a photo."""

    landmarks: np.ndarray  # (478, 3) float32, pixels of the photo
    box: tuple[int, int, int, int]  # detector box x0, y0, x1, y1 in photo pixels
    face_count: int  # how many faces the detector saw in the photo


def _detect_boxes(image: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Face boxes (x0, y0, x1, y1 pixels) from MediaPipe's full-range face detector, largest first."""
    h, w = image.shape[:2]
    with native_logs_silenced(), \
            mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5) as det:
        result = det.process(image)
    boxes = []
    for d in result.detections or []:
        b = d.location_data.relative_bounding_box
        x0, y0 = int(round(b.xmin * w)), int(round(b.ymin * h))
        x1, y1 = int(round((b.xmin + b.width) * w)), int(round((b.ymin + b.height) * h))
        boxes.append((max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)))
    boxes.sort(key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)
    return boxes


def _mesh_static(image: np.ndarray) -> np.ndarray | None:
    """FaceMesh landmarks of the largest face in a (small) image, static mode; None if none."""
    with native_logs_silenced(), mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.4) as mesh:
        result = mesh.process(image)
    if not result.multi_face_landmarks:
        return None
    return _to_pixels(result.multi_face_landmarks[0], image.shape[1], image.shape[0])


def _check_face_width(width_px: float, min_face_px: int) -> None:
    if width_px < min_face_px:
        raise FaceTooSmallError(f"the face is {width_px:.0f} px wide; at least {min_face_px} px are needed: "
                                "use a closer or larger photo")


def detect_photo_face(image: np.ndarray, min_face_px: int = MIN_FACE_PX) -> PhotoFace:
    """Find the largest face of a photo and its 478 landmarks.

    The full-range detector counts the faces and picks the largest; FaceMesh then runs on a
    square window around it (resized to 512 px), so faces of any size in photos of any size
    are measured at the same resolution. When the detector sees nothing (a tight face crop),
    FaceMesh looks at the whole photo.
    Args: image (H, W, 3) uint8 RGB.
    Raises: NoFaceError when no face is found; FaceTooSmallError when the largest face is
    narrower than ``min_face_px``.
    """
    import cv2

    _check_rgb(image)
    h, w = image.shape[:2]
    boxes = _detect_boxes(image)
    if boxes:
        box = boxes[0]
        bw, bh = box[2] - box[0], box[3] - box[1]
        _check_face_width(bw, min_face_px)
        side = 2.2 * max(bw, bh)
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2 - 0.1 * bh
    else:
        side, cx, cy = max(h, w), w / 2, h / 2
    scale = 512.0 / side
    m = np.array([[scale, 0, 256 - scale * cx], [0, scale, 256 - scale * cy]], dtype=np.float64)
    window = cv2.warpAffine(image, m, (512, 512), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    found = _mesh_static(window)
    if found is None:
        raise NoFaceError("no face found in the photo: use a photo with one clearly visible face, "
                          "looking at the camera")
    pts = found.astype(np.float64)
    pts[:, :2] = (pts[:, :2] - m[:, 2]) / scale
    pts[:, 2] /= scale
    (x0, y0), (x1, y1) = pts[:, :2].min(axis=0), pts[:, :2].max(axis=0)
    _check_face_width(x1 - x0, min_face_px)
    return PhotoFace(pts.astype(np.float32), boxes[0] if boxes else (int(x0), int(y0), int(x1), int(y1)),
                     max(len(boxes), 1))
