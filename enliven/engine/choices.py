"""The choices a user can make, defined once: crop sizes, engines and the trained engine's face refiners.

The CLI, the server's options and channel messages, and the Animator's config all read these.
"""
from __future__ import annotations

from typing import Literal

CROP_SIZES_PX: tuple[int, ...] = (256, 512)  # face crop sides offered to users (the engine also takes 128, 384)
ENGINE_CROP_SIZES_PX: tuple[int, ...] = (128, 256, 384, 512)  # every crop side the engine itself accepts
EngineName = Literal["analytic", "trained"]
ENGINES: tuple[str, ...] = ("analytic", "trained")  # "analytic": the warp alone; "trained": warp + learned refiner
DEFAULT_ENGINE: EngineName = "trained"
DEFAULT_CROP_SIZE_PX = 256
# The shipped face refiners of the trained engine (their weights: models/shipped.py): "refiner128", the best on
# val; "refiner128s", it distilled to a cheaper top level (~40 % less decoder time, val face PSNR -0.06 dB).
FACE_REFINERS: tuple[str, ...] = ("refiner128", "refiner128s")
DEFAULT_REFINER = "refiner128"  # the Animator's (offline, cam)
FAST_REFINER = "refiner128s"  # the live server's: more sessions per core
