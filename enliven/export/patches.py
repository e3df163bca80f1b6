"""torch -> ONNX for the eye and mouth patch refiners (one graph each), checked against torch.

The graph takes PATCH_INPUTS and gives PATCH_OUTPUTS (engine/patches.py), float32 NCHW in [0, 1],
with a dynamic batch axis (both eyes in one call). Equivalence: the largest |onnx - torch| on random
patches must stay under the fp32 tolerance of the face refiner's export (compare.TOLERANCE).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..engine.contract import FRAME_PATH_CONTRACT, InputContract, recorded_holds
from ..engine.errors import ModelFileError
from ..engine.patches import PATCH_INPUTS, PATCH_OUTPUTS, PatchRunner
from ..engine.runtime import OnnxModel, RuntimeConfig
from ..models.shipped import check_sha256, sha256_file, shipped_file
from .cache import export_dirs, models_dir, publish
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


def open_patch_runner(eye_weights: str | Path | None, mouth_weights: str | Path | None,
                      threads: int | None = None, expected: InputContract = FRAME_PATH_CONTRACT) -> PatchRunner:
    """A PatchRunner on ONNX Runtime for patch refiner weights files (None: that region is not refined;
    "shipped": the weights shipped with enliven, see models/weights/).

    ``expected``: the frame path's input contract (warp version) the weights must have been trained behind.
    Each file is exported once into the model cache (a folder named by its sha256), checked against torch;
    the folder's patch.json records the patch side and the contract, so a cached graph opens without torch.
    Raises: ModelFileError for a missing or invalid file; ExportError when the export fails its check.
    """

    def one(weights: str | Path | None, name: str) -> tuple[OnnxModel | None, int]:
        if weights is None:
            return None, 0
        path = shipped_file(name, expected.warp_version) if weights == "shipped" else Path(weights)
        if weights == "shipped":
            digest = check_sha256(path)
        elif not path.is_file():
            raise ModelFileError(f"weights file {path} not found")
        else:
            digest = sha256_file(path)
        folder = models_dir() / f"patch-{digest[:16]}-op{OPSET}-v{PATCH_CACHE_VERSION}"
        side = _cached_side(folder, path, expected)
        if side is None:
            folder, side = _export_into_cache(path, folder, expected)
        return OnnxModel(folder / "patch.onnx", RuntimeConfig(intra_op_threads=threads)), side

    eye, eye_px = one(eye_weights, "patch-eye64")
    mouth, mouth_px = one(mouth_weights, "patch-mouth96")
    return PatchRunner(eye, mouth, eye_px or 64, mouth_px or 96)


PATCH_CACHE_VERSION = 2  # of a cached patch folder: patch.onnx + patch.json (side_px, contract)


def _cached_side(folder: Path, weights: Path, expected: InputContract) -> int | None:
    """The patch side of the cached, checked graph of ``weights`` trained under ``expected``; None when there
    is none. Raises ModelFileError when the weights were trained under another contract (their loader's error).
    """
    try:
        meta = json.loads((folder / "patch.json").read_text())
        side, contract = int(meta["side_px"]), meta["contract"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (folder / "patch.onnx").is_file():
        return None
    if not recorded_holds(contract, expected):
        from ..models.patches import load_patch_refiner

        load_patch_refiner(weights, expected)  # raises: trained under another contract
        return None
    return side


def _export_into_cache(weights: Path, folder: Path, expected: InputContract) -> tuple[Path, int]:
    """Export ``weights`` into ``folder`` (checked against torch, patch.json beside the graph), built in a
    private folder and renamed into place: processes starting together (the server's workers) never read a
    half-written graph. Returns the folder (a temporary one when the cache is read-only) and the patch side."""
    from ..models.patches import load_patch_refiner

    model = load_patch_refiner(weights, expected)
    folder, tmp = export_dirs(folder)
    try:
        export_patch_refiner(model, tmp / "patch.onnx")
        diffs = compare_patch_refiner(model, tmp / "patch.onnx")
        (tmp / "patch.json").write_text(json.dumps({
            "weights": str(weights), "side_px": model.config.side_px, "contract": expected.to_dict(),
            "opset": OPSET, "max_abs_diff_vs_torch": diffs}, indent=1))
        publish(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder, model.config.side_px
