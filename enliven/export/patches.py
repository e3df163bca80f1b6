"""torch -> ONNX for the eye and mouth patch refiners (one graph each), checked against torch.

The graph takes PATCH_INPUTS and gives PATCH_OUTPUTS (engine/patches.py), float32 NCHW in [0, 1],
with a dynamic batch axis (both eyes in one call). Equivalence: the largest |onnx - torch| on random
patches must stay under the fp32 tolerance of the face refiner's export (compare.TOLERANCE).
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..engine.contract import FRAME_PATH_CONTRACT, InputContract
from ..engine.patches import PATCH_INPUTS, PATCH_OUTPUTS, PatchRunner
from ..engine.runtime import OnnxModel, RuntimeConfig
from .cache import atomic_dir, models_dir, publish
from .compare import TOLERANCE
from .graphs import OPSET, ExportError
from .to_onnx import export_module

log = logging.getLogger(__name__)


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


def open_patch_runner(eye_weights: str | Path | None, mouth_weights: str | Path | None,
                      threads: int | None = None, expected: InputContract = FRAME_PATH_CONTRACT) -> PatchRunner:
    """A PatchRunner on ONNX Runtime for patch refiner weights files (None: that region is not refined;
    "shipped": the weights shipped with enliven, see models/weights/).

    ``expected``: the frame path's input contract (warp version) the weights must have been trained behind.
    Each file is exported once into the model cache (a folder named by its sha256), checked against torch.
    Raises: ModelFileError for a missing or invalid file; ExportError when the export fails its check.
    """
    from ..models.generator import check_sha256, sha256_file, shipped_weights_path
    from ..models.patches import load_patch_refiner

    def one(weights: str | Path | None, name: str) -> tuple[OnnxModel | None, int]:
        if weights is None:
            return None, 0
        path = shipped_weights_path(name, expected.warp_version) if weights == "shipped" else Path(weights)
        if weights == "shipped":
            check_sha256(path)
        model = load_patch_refiner(path, expected)
        folder = models_dir() / f"patch-{sha256_file(path)[:16]}-op{OPSET}"
        if not (folder / "patch.onnx").is_file():
            # Exported and checked in a private folder, then renamed into place: processes starting
            # together (the server's workers) never read a half-written graph.
            try:
                tmp = atomic_dir(folder)
            except OSError as e:  # a read-only home: export into a private temporary folder instead
                log.warning("cannot write the model cache %s (%s); exporting to a temporary folder", folder.parent, e)
                folder = Path(tempfile.mkdtemp(prefix="enliven-models-")) / folder.name
                tmp = atomic_dir(folder)
            try:
                export_patch_refiner(model, tmp / "patch.onnx")
                compare_patch_refiner(model, tmp / "patch.onnx")
                publish(tmp, folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return OnnxModel(folder / "patch.onnx", RuntimeConfig(intra_op_threads=threads)), model.config.side_px

    eye, eye_px = one(eye_weights, "patch-eye64")
    mouth, mouth_px = one(mouth_weights, "patch-mouth96")
    return PatchRunner(eye, mouth, eye_px or 64, mouth_px or 96)
