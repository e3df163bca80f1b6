"""Driving material the project makes itself (no research data): real-looking face video frames.

The built-in photo animated by the built-in procedural motion gives a video of a real face
that turns, nods, blinks, smiles and talks. Tests and benchmarks use it as a driving
"webcam" clip, so they run anywhere with nothing downloaded.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from .animation.animator import Animator, AnimatorConfig
from .engine.defaults import builtin_photo
from .engine.procedural import builtin_motion


@lru_cache(maxsize=2)
def _driving_frames(width: int, height: int, fps: float, stride: int) -> tuple[np.ndarray, ...]:
    photo = builtin_photo()
    motion = builtin_motion(fps=fps / stride * stride)[::stride]
    side = min(width, height)
    frames = []
    with Animator(AnimatorConfig(crop_size_px=256, fps=fps, engine="analytic")) as animator:
        animator.prepare(photo)
        for i, points in enumerate(motion):
            out = animator.step_landmarks(points, t=i * stride / fps)
            canvas = np.full((height, width, 3), 40, np.uint8)
            x0, y0 = (width - side) // 2, (height - side) // 2
            canvas[y0:y0 + side, x0:x0 + side] = cv2.resize(out, (side, side), interpolation=cv2.INTER_AREA)
            frames.append(canvas)
    for f in frames:
        f.setflags(write=False)
    return tuple(frames)


def driving_frames(width: int = 640, height: int = 480, fps: float = 25.0, stride: int = 1) -> list[np.ndarray]:
    """Frames (H, W, 3) uint8 RGB (read-only) of the built-in photo moved by the built-in motion.

    The face sits in the middle of a dark webcam-sized canvas. ``stride`` keeps every n-th frame
    (the motion is still timed at ``fps``). Cached: the second call is free.
    """
    return list(_driving_frames(width, height, fps, stride))


def demo_output_frames(crop_size_px: int = 256, output: str = "crop", count: int = 50,
                       start: int = 100) -> list[np.ndarray]:
    """Unwatermarked consecutive frames of the built-in demo: the built-in photo moved by the built-in motion.

    Args: crop_size_px 256 or 512; output "crop" (the animated face crop) or "photo" (the whole
        photo, 512x512); count consecutive frames from frame ``start`` of the 10 s, 25 fps motion
        (analytic engine; consecutive, as a video has them, so codecs see real motion between frames).
    Returns: count (H, W, 3) uint8 RGB frames.
    """
    fps = 25.0
    motion = builtin_motion(fps=fps)[: start + count]
    frames = []
    config = AnimatorConfig(crop_size_px=crop_size_px, output=output,  # type: ignore[arg-type]
                            engine="analytic", fps=fps)
    with Animator(config) as animator:
        animator.prepare(builtin_photo())
        for i, points in enumerate(motion):  # every frame is stepped: the motion's smoothing needs them
            out = animator.step_landmarks(points, t=i / fps)
            if i >= start:
                frames.append(out.copy())
    return frames
