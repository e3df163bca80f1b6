"""Equivalence of exported graphs with torch: the largest difference on random and real inputs.

Each precision has a stated tolerance (int8 has none here: its quality is judged by ``enliven
evaluate`` on val). The cache refuses graphs that fail; ``enliven export`` prints the figures.
"""
from __future__ import annotations

import numpy as np

from ..engine.runtime import OnnxModel, RuntimeConfig
from .graphs import ExportedGenerator, ExportError
from .samples import real_inputs

TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "int8": None}  # max |onnx - torch| allowed; int8 is judged by evaluate


def torch_outputs(model: "Refiner", feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # noqa: F821
    """The torch model's outputs for one decoder feed (with ``code``) or encoder feed (``source``)."""
    import torch

    t = {k: torch.from_numpy(v) for k, v in feeds.items()}
    with torch.inference_mode():
        if "source" in t:
            return {"code": model.encoder(t["source"]).numpy()}
        out = model.decoder(t["warped"], t["drawing"], t["gate"], t["code"])
    return {"delta": out.delta.numpy(), "mask": out.mask.numpy()}


def compare(model: "Refiner", exported: ExportedGenerator, real_frames: int = 8,  # noqa: F821
            providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> dict[str, float]:
    """Max |onnx - torch| per output on random inputs and on real frames (batch as exported, or 1 and 3).

    Returns {"code", "delta", "mask"} -> the largest difference seen.
    """
    cfg = RuntimeConfig(providers=providers, intra_op_threads=1)
    enc, dec = OnnxModel(exported.encoder, cfg), OnnxModel(exported.decoder, cfg)
    batches = [exported.batch] if exported.batch else [1, 3]
    worst = {"code": 0.0, "delta": 0.0, "mask": 0.0}

    def check(model_onnx: object, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ref = torch_outputs(model, feeds)
        got = model_onnx(**feeds)  # type: ignore[operator]
        for k, v in ref.items():
            worst[k] = max(worst[k], float(np.abs(got[k] - v).max()))
        return ref

    rng = np.random.default_rng(0)
    r = exported.resolution_px
    samples = real_inputs(r, frames=real_frames)
    for n in batches:
        code = check(enc, {"source": rng.random((n, 3, r, r), dtype=np.float32)})["code"]
        check(dec, {"warped": rng.random((n, 3, r, r), dtype=np.float32),
                    "drawing": rng.random((n, 3, r, r), dtype=np.float32),
                    "gate": rng.random((n, 1, r, r), dtype=np.float32), "code": code})
        real_code = check(enc, {"source": np.repeat(samples.source, n, 0)})["code"]
        for i in range(0, len(samples.decoder) - n + 1, n):
            group = samples.decoder[i:i + n]
            feeds = {k: np.concatenate([g[k] for g in group]) for k in ("warped", "drawing", "gate")}
            check(dec, {**feeds, "code": real_code})
    return worst


def verify(model: "Refiner", exported: ExportedGenerator) -> dict[str, float]:  # noqa: F821
    """``compare`` and raise ExportError when a difference exceeds the precision's tolerance."""
    diffs = compare(model, exported)
    tol = TOLERANCE[exported.precision]
    if tol is not None:
        bad = {k: v for k, v in diffs.items() if v > tol}
        if bad:
            raise ExportError(f"exported {exported.precision} graphs differ from torch by {bad} (> {tol})")
    return diffs
