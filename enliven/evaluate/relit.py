"""The relight stage for evaluations that run the warp and the refiner themselves.

The Animator runs warp -> refiner -> patches -> relight (``engine.relight``). The evaluations that call the
warp and the refiner one by one (self-reenactment, the region metrics, cross-reenactment's trained rows)
apply the relight here, last, so they measure what the product shows.
"""
from __future__ import annotations

import numpy as np

from ..engine.relight import LightConfig, Relighter
from ..engine.warp import Warper


class Relight:
    """The relight of one photo, or nothing (``config`` None). Images are (S, S, 3) uint8."""

    def __init__(self, config: LightConfig | None, source_crop: np.ndarray, source_points: np.ndarray) -> None:
        self._relighter = Relighter(source_crop, source_points, config) if config is not None else None

    def frame(self, warper: Warper, driven_points: np.ndarray) -> FrameRelight:
        """The relight of one driven frame (its warp map taken from ``warper``)."""
        if self._relighter is None:
            return FrameRelight(None, None, driven_points)
        return FrameRelight(self._relighter, warper.flow(driven_points).copy(), driven_points)


class FrameRelight:
    """Applies one driven frame's relight to any output of that frame (the identity when off)."""

    def __init__(self, relighter: Relighter | None, flow: np.ndarray | None, driven_points: np.ndarray) -> None:
        self._relighter, self._flow, self._points = relighter, flow, driven_points

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self._relighter is None or self._flow is None:
            return image
        return self._relighter.apply(image, self._flow, self._points)
