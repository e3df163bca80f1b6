"""Offline animation: a photo and a driving video (or the built-in motion) -> a video, a GIF or PNG frames.

The output's kind comes from its path (output_formats.FORMATS); the path is checked before any
work, and the output appears only once it is complete.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .animation.animator import Animator, AnimatorConfig
from .animation.pipeline import PipelinedAnimator
from .engine.defaults import builtin_photo
from .engine.image_io import load_photo
from .engine.image_writers import encode_disclosed_png
from .engine.procedural import builtin_motion
from .engine.render import draw_landmarks
from .engine.video_io import DrivingVideo
from .output_formats import FrameWriter, Inputs, OutputTarget, check_side_output, open_writer, resolve_output
from .provenance.output import FileProvenance, ProvenanceOptions  # PROVENANCE (issue #14)

STRIP_FRAMES = 6


@dataclass(frozen=True)
class AnimateReport:
    output: OutputTarget  # where it went, and in which format
    frames: int  # frames the output holds
    fps: float  # the output's frame rate (the driver's; a GIF's may be lower)
    size: tuple[int, int]  # the output's (width, height), pixels
    audio: bool  # whether the output has an audio track
    animated: int  # frames animated (a GIF keeps some of them)
    seconds: float  # wall time spent
    face_found: float  # fraction of driving frames with a face
    face_count: int  # faces seen in the photo (the largest one is animated)
    strip: Path | None

    def summary(self) -> str:
        faces = "" if self.face_count <= 1 else f"; {self.face_count} faces in the photo, animated the largest"
        strip = f"; strip {self.strip}" if self.strip else ""
        sound = "with audio" if self.audio else "no audio"
        return (f"wrote {self.output} ({self.output.format.name}, {self.size[0]}x{self.size[1]}, {self.frames} "
                f"frames at {self.fps:.2f} fps, {sound}) in {self.seconds:.1f} s: animated {self.animated} frames "
                f"({self.animated / max(self.seconds, 1e-9):.1f} frames/s), face found in "
                f"{100 * self.face_found:.0f}% of driving frames{faces}{strip}")


def _report(target: OutputTarget, writer: FrameWriter, animated: int, start: float, face_found: float,
            face_count: int, strip: Path | None) -> AnimateReport:
    return AnimateReport(target, writer.frames_written, float(writer.rate), writer.encoded_size, writer.has_audio,
                         animated, time.perf_counter() - start, face_found, face_count, strip)


def _targets(output: str | os.PathLike[str] | OutputTarget, strip: str | os.PathLike[str] | None,
             inputs: Inputs) -> tuple[OutputTarget, Path | None]:
    """The checked output and strip paths (BadOutputError before any work if one cannot be written)."""
    target = output if isinstance(output, OutputTarget) else resolve_output(output, inputs)
    if strip is None:
        return target, None
    return target, check_side_output(strip, {**inputs, "output": target.path}, "the strip")


def _square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre square of an image, resized to size x size."""
    h, w = image.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return cv2.resize(image[y:y + s, x:x + s], (size, size), interpolation=cv2.INTER_AREA)


class _StripRecorder:
    """Keeps a few (source | driver | output) rows, evenly spread over the clip, for a PNG strip."""

    def __init__(self, path: Path | None, total: int | None, source_crop: np.ndarray) -> None:
        self.path = path
        self.size = 256
        self.source = _square(source_crop, self.size)
        n = max(total or 150, 1)
        self.picks = set(np.linspace(n * 0.1, n * 0.9, STRIP_FRAMES).astype(int).tolist())
        self.rows: list[np.ndarray] = []

    def offer(self, index: int, driver: np.ndarray, output_crop: np.ndarray) -> None:
        if self.path is not None and index in self.picks:
            self.rows.append(np.concatenate([self.source, _square(driver, self.size),
                                             _square(output_crop, self.size)], axis=1))

    def save(self) -> Path | None:
        """Write the strip (with the disclosure text chunk) beside itself, then rename it into place."""
        if self.path is None or not self.rows:
            return None

        partial = self.path.with_name(f".{self.path.name}.partial")
        try:
            partial.write_bytes(encode_disclosed_png(np.concatenate(self.rows, axis=0)))
            os.replace(partial, self.path)
        finally:
            partial.unlink(missing_ok=True)
        return self.path


def _face_window(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The square of ``image`` around a face (1.4 times its landmarks' extent), for showing a driver."""
    lo, hi = points[:, :2].min(0), points[:, :2].max(0)
    cx, cy = (lo + hi) / 2
    half = int(0.7 * max(hi - lo))
    x0, y0 = max(int(cx) - half, 0), max(int(cy) - half, 0)
    return image[y0:y0 + 2 * half, x0:x0 + 2 * half]


def _crop_of(animator: Animator, frame: np.ndarray) -> np.ndarray:
    """The face crop of an output frame (for the strip), whatever the configured output."""
    if animator.config.output == "crop":
        return frame
    t = animator.source.transform  # type: ignore[union-attr]
    return cv2.warpAffine(frame, t.matrix, (t.size_px, t.size_px), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def animate_video(photo: str | Path | None, driving: str | Path, output: str | os.PathLike[str] | OutputTarget,
                  config: AnimatorConfig = AnimatorConfig(), *, strip: str | Path | None = None,
                  progress: bool = True, provenance: ProvenanceOptions = ProvenanceOptions()) -> AnimateReport:
    """Animate ``photo`` (default: built-in) with a driving video; keeps its fps, and its audio where the
    output's format has audio. ``output``: a path (its kind by extension, see output_formats) or a target
    resolve_output checked already. Raises BadOutputError before any work if it cannot be written."""
    target, strip_path = _targets(output, strip, {"photo": photo, "driving video": driving})
    image = builtin_photo() if photo is None else load_photo(photo)
    marks = FileProvenance(provenance)  # PROVENANCE: watermark session + C2PA identity
    start = time.perf_counter()
    found = frames = 0
    with PipelinedAnimator(Animator(config)) as animator, DrivingVideo(driving) as video:
        source = animator.prepare(image)
        size = (image.shape[1], image.shape[0]) if config.output == "photo" else (config.crop_size_px,) * 2
        recorder = _StripRecorder(strip_path, video.num_frames, source.crop)
        audio = str(driving) if video.has_audio else None
        with open_writer(target, video.fps, size, audio_from=audio) as writer:
            previous: np.ndarray | None = None

            def emit(out: np.ndarray | None, index: int, driver: np.ndarray | None) -> None:
                nonlocal found, frames
                if out is None or driver is None:
                    return
                writer.write(marks.mark(out))  # PROVENANCE: watermark each frame as it is written
                found += animator.last.face_found
                frames += 1
                recorder.offer(index, driver, _crop_of(animator.animator, out))

            # Landmarks of frame i run in a second process while this one animates frame i - 1.
            for i, frame in enumerate(tqdm(video, total=video.num_frames, unit="frame", disable=not progress,
                                           desc="animating")):
                emit(animator.step(frame, t=i / video.fps), i - 1, previous)
                previous = frame
            emit(animator.flush(), frames, previous)
        count = source.face.face_count
    marks.sign(target.path, photo, driving)  # PROVENANCE: C2PA manifest on the finished file
    return _report(target, writer, frames, start, found / max(frames, 1), count, recorder.save())


def animate_builtin(photo: str | Path | None, output: str | os.PathLike[str] | OutputTarget,
                    config: AnimatorConfig = AnimatorConfig(), *, strip: str | Path | None = None,
                    progress: bool = True, fps: float = 25.0,
                    provenance: ProvenanceOptions = ProvenanceOptions()) -> AnimateReport:
    """Animate ``photo`` (default: built-in) with the built-in procedural motion (no video needed).
    ``output`` as for animate_video."""
    target, strip_path = _targets(output, strip, {"photo": photo})
    image = builtin_photo() if photo is None else load_photo(photo)
    motion = builtin_motion(fps=fps)
    marks = FileProvenance(provenance)  # PROVENANCE: watermark session + C2PA identity
    start = time.perf_counter()
    with Animator(replace(config, fps=fps)) as animator:
        source = animator.prepare(image)
        size = (image.shape[1], image.shape[0]) if config.output == "photo" else (config.crop_size_px,) * 2
        recorder = _StripRecorder(strip_path, len(motion), source.crop)
        with open_writer(target, fps, size) as writer:
            for i, points in enumerate(tqdm(motion, unit="frame", disable=not progress, desc="animating")):
                out = animator.step_landmarks(points, t=i / fps)
                writer.write(marks.mark(out))  # PROVENANCE: watermark each frame as it is written
                if recorder.path is not None and i in recorder.picks:
                    recorder.offer(i, _face_window(draw_landmarks(points, 512), motion[0]), _crop_of(animator, out))
        count = source.face.face_count
    marks.sign(target.path, photo, None)  # PROVENANCE: C2PA manifest on the finished file
    return _report(target, writer, len(motion), start, 1.0, count, recorder.save())
