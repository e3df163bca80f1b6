"""Building blocks shared by the face refiner (generator.py) and the patch refiners (patches.py)."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

MASK_MIN, MASK_MAX = 0.02, 0.98  # bounds of the blend mask


class GeneratorOutput(NamedTuple):
    delta: torch.Tensor  # (N, 3, R, R) float32, what to add to the warp, image units
    mask: torch.Tensor  # (N, 1, R, R) float32 in [MASK_MIN, MASK_MAX], before the gate


def conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution (padding 1) and LeakyReLU(0.2)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2, inplace=True))
