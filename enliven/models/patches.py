"""Patch refiners: small U-Nets for eye and mouth patches at higher resolution (see engine/patches.py).

    warped (N, 3, P, P) + source (N, 3, P, P) + drawing (N, 3, P, P) + gate (N, 1, P, P)
        --PatchRefiner--> delta (N, 3, P, P), mask (N, 1, P, P)

As the face refiner: a tanh residual and a blend mask bounded to [MASK_MIN, MASK_MAX], and
``delta = gate * mask * (clamp(warped + residual) - warped)``; the gate is 0 at the patch border,
so a pasted patch leaves no seam. The source patch (the same region of the photo) tells it the
person's own lashes, lips and teeth. Plain convolutions, resizes and element-wise ops: exports to ONNX.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.contract import FRAME_PATH_CONTRACT, InputContract, check_recorded
from ..engine.errors import ModelFileError
from ._layers import MASK_MAX, MASK_MIN, GeneratorOutput
from ._layers import conv as _conv


@dataclass(frozen=True)
class PatchConfig:
    """Architecture of a patch refiner."""

    side_px: int = 64  # patch side, pixels (eyes 64-96, mouth 96-128)
    widths: tuple[int, ...] = (16, 32, 48)  # U-Net channels per level (level i at P / 2**i)
    bottleneck: int = 64  # channels at the lowest level
    residual_scale: float = 1.0  # tanh residual times this, image units

    def __post_init__(self) -> None:
        if self.side_px % (2 ** len(self.widths)):
            raise ValueError(f"side_px {self.side_px} must be divisible by 2**{len(self.widths)}")


class PatchRefiner(nn.Module):
    """(warped, source, drawing, gate) -> GeneratorOutput for one patch. See the module docstring."""

    IN_CHANNELS = 9  # warped, source and drawing, RGB each

    def __init__(self, cfg: PatchConfig) -> None:
        super().__init__()
        self.config = cfg
        w = list(cfg.widths)
        self.stem = _conv(self.IN_CHANNELS, w[0])
        self.down = nn.ModuleList()
        for i in range(len(w)):
            cout = w[i + 1] if i + 1 < len(w) else cfg.bottleneck
            self.down.append(nn.Sequential(_conv(w[i], cout, 2), _conv(cout, cout)))
        self.up = nn.ModuleList()
        for i in reversed(range(len(w))):
            cin = (w[i + 1] if i + 1 < len(w) else cfg.bottleneck) + w[i]
            self.up.append(nn.Sequential(_conv(cin, w[i]), _conv(w[i], w[i])))
        self.head = nn.Conv2d(w[0], 4, 3, 1, 1)
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.zeros_(self.head.bias)

    def forward(self, warped: torch.Tensor, source: torch.Tensor, drawing: torch.Tensor,
                gate: torch.Tensor) -> GeneratorOutput:
        x = self.stem(torch.cat([warped * 2 - 1, source * 2 - 1, drawing * 2 - 1], dim=1))
        skips = [x]
        for down in self.down:
            x = down(x)
            skips.append(x)
        x = skips.pop()
        for up in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = up(torch.cat([x, skip], dim=1))
        h = self.head(x)
        residual = torch.tanh(h[:, :3]) * self.config.residual_scale
        mask = MASK_MIN + (MASK_MAX - MASK_MIN) * torch.sigmoid(h[:, 3:4])
        refined = torch.clamp(warped + residual, 0.0, 1.0)
        return GeneratorOutput(gate * mask * (refined - warped), mask)


def load_patch_refiner(path: Path, expected: InputContract = FRAME_PATH_CONTRACT) -> PatchRefiner:
    """A trained patch refiner in eval mode from a weights file written by ``generator.save_weights``.

    ``expected``: the frame path's input contract (warp version ...) the weights must record: a patch
    refiner corrects the output of the warp and face refiner it was trained behind.
    Raises: ModelFileError when the file is missing, corrupt, not a patch refiner or of another contract.
    """
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        cfg = PatchConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in blob["config"].items()})
        model = PatchRefiner(cfg)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
        contract = blob.get("contract")
    except FileNotFoundError as e:
        raise ModelFileError(f"weights file {path} not found") from e
    except (RuntimeError, KeyError, TypeError, ValueError, EOFError, OSError, pickle.UnpicklingError) as e:
        raise ModelFileError(f"weights file {path} is not a valid enliven patch refiner ({e})") from e
    check_recorded(contract, expected, Path(path))
    return model.eval()


