"""The choices a user can make, defined once: crop sizes and engines.

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
