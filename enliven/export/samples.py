"""Real refiner inputs made by the project itself: the built-in photo moved by the built-in motion.

Used to check exported graphs on real (not only random) inputs and to calibrate int8 ranges.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Samples(NamedTuple):
    source: np.ndarray  # (1, 3, R, R) float32 in [0, 1], the photo's crop
    decoder: list[dict[str, np.ndarray]]  # per frame: warped, drawing (1, 3, R, R), gate (1, 1, R, R); no code


def real_inputs(resolution_px: int, frames: int = 16, crop_size_px: int = 256) -> Samples:
    """``frames`` frames spread over the built-in motion (turns, blinks, talking) at the refiner's size."""
    import cv2

    from ..engine.animator import Animator, AnimatorConfig
    from ..engine.defaults import builtin_photo
    from ..engine.procedural import builtin_motion
    from ..engine.refine import nchw, refiner_inputs

    motion = builtin_motion(fps=30.0)
    picks = np.unique(np.linspace(0, len(motion) - 1, frames).astype(int))
    feeds = []
    with Animator(AnimatorConfig(crop_size_px=crop_size_px, output="crop", engine="analytic")) as anim:
        source = anim.prepare(builtin_photo()).crop
        for i, points in enumerate(motion[: picks[-1] + 1]):
            out = anim.step_landmarks(points, t=i / 30.0)
            if i in picks:
                inp = refiner_inputs(out, anim.last.driven_points, resolution_px)
                feeds.append({"warped": nchw(inp.warped), "drawing": nchw(inp.drawing), "gate": nchw(inp.gate)})
    small = cv2.resize(source, (resolution_px, resolution_px), interpolation=cv2.INTER_AREA)
    return Samples(nchw(small), feeds)
