"""torch -> ONNX for the eye and mouth patch refiners (one graph each), checked against torch.

The graph takes PATCH_INPUTS and gives PATCH_OUTPUTS (engine/patches.py), float32 NCHW in [0, 1],
with a dynamic batch axis (both eyes in one call). Equivalence: the largest |onnx - torch| on random
patches must stay under the fp32 tolerance of the face refiner's export (compare.TOLERANCE).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..engine.patches import PATCH_INPUTS, PATCH_OUTPUTS
from ..engine.runtime import OnnxModel, RuntimeConfig
from .compare import TOLERANCE
from .graphs import OPSET, ExportError
from .to_onnx import export_module


def _feeds(side_px: int, batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    img = lambda c: rng.random((batch, c, side_px, side_px), dtype=np.float32)
    return {"warped": img(3), "source": img(3), "drawing": img(3), "gate": img(1)}


def export_patch_refiner(model: PatchRefiner, path: Path, opset: int = OPSET) -> Path:  # noqa: F821
    """Export a patch refiner to ``path`` (dynamic batch), onnx.checker-checked; returns the path."""
    import torch

    side = model.config.side_px
    example = tuple(torch.from_numpy(v) for v in _feeds(side, 1, 0).values())
    path.parent.mkdir(parents=True, exist_ok=True)
    return export_module(model.eval(), example, path, PATCH_INPUTS, PATCH_OUTPUTS, None, opset)


def compare_patch_refiner(model: PatchRefiner, path: Path, batches: tuple[int, ...] = (1, 2)) -> dict[str, float]:  # noqa: F821
    """Max |onnx - torch| per output over random patches of each batch size; raises ExportError over tolerance."""
    import torch

    onnx_model = OnnxModel(path, RuntimeConfig(providers=("CPUExecutionProvider",), intra_op_threads=1))
    worst = {"delta": 0.0, "mask": 0.0}
    for k, b in enumerate(batches):
        feeds = _feeds(model.config.side_px, b, k + 1)
        with torch.inference_mode():
            ref = model(*(torch.from_numpy(feeds[n]) for n in PATCH_INPUTS))
        got = onnx_model(**feeds)
        for name, want in (("delta", ref.delta.numpy()), ("mask", ref.mask.numpy())):
            worst[name] = max(worst[name], float(np.abs(got[name] - want).max()))
    if max(worst.values()) > TOLERANCE["fp32"]:
        raise ExportError(f"{path.name}: ONNX differs from torch by {worst} (tolerance {TOLERANCE['fp32']})")
    return worst
