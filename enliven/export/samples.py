"""Real refiner inputs made by the project itself: the built-in photo moved by the built-in motion.

Used to check exported graphs on real (not only random) inputs and to calibrate int8 ranges.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..engine.canonical import load_canonical
from ..engine.compose import crop, crop_transform
from ..engine.defaults import builtin_photo
from ..engine.landmarks import detect_photo_face
from ..engine.motion import (
    DriverReference,
    FaceState,
    MotionLimits,
    TransferMode,
    measure_motion,
    retarget,
)
from ..engine.procedural import builtin_motion
from ..engine.refine import nchw, refiner_inputs
from ..engine.warp import Warper, fill_mouth_gap, lip_color


class Samples(NamedTuple):
    source: np.ndarray  # (1, 3, R, R) float32 in [0, 1], the photo's crop
    decoder: list[dict[str, np.ndarray]]  # per frame: warped, drawing (1, 3, R, R), gate (1, 1, R, R); no code


def real_inputs(resolution_px: int, frames: int = 16, crop_size_px: int = 256) -> Samples:
    """``frames`` frames spread over the built-in motion (turns, blinks, talking) at the refiner's size.

    The frames are the analytic frame path's (the Animator's "analytic" engine, relative transfer,
    default gains and limits), built here from the engine's stages so that export needs no Animator.
    """
    import cv2

    fps = 30.0
    motion = builtin_motion(fps=fps)
    picks = np.unique(np.linspace(0, len(motion) - 1, frames).astype(int))
    canonical = load_canonical().points
    photo = builtin_photo()
    face = detect_photo_face(photo)
    transform = crop_transform(face.landmarks, crop_size_px)
    source = crop(photo, transform)
    points = transform.points_to_crop(face.landmarks)
    state = FaceState.measure(points, canonical)
    lips = lip_color(source, points)
    warper = Warper(points, crop_size_px)
    reference = DriverReference(canonical)
    feeds = []
    for i, driver in enumerate(motion[: picks[-1] + 1]):
        measured = FaceState.measure(driver, canonical)
        moved = measure_motion(measured, reference.update(measured, i / fps))
        if i in picks:
            driven = retarget(state, moved, TransferMode.RELATIVE, limits=MotionLimits())
            out = warper.warp(source, driven)
            fill_mouth_gap(out, driven, warper.mouth(driven), lips)
            inp = refiner_inputs(out, driven, resolution_px)
            feeds.append({"warped": nchw(inp.warped), "drawing": nchw(inp.drawing), "gate": nchw(inp.gate)})
    small = cv2.resize(source, (resolution_px, resolution_px), interpolation=cv2.INTER_AREA)
    return Samples(nchw(small), feeds)
