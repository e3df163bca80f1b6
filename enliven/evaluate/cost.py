"""What the generator costs: its size and FLOPs, and the decoder's time per frame on this machine."""
from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..engine.contract import FRAME_PATH_CONTRACT, InputContract
from ..engine.refine import DECODER_INPUTS, DECODER_OUTPUTS, Precision
from ..engine.runtime import Model, OnnxModel, RuntimeConfig, TorchModel
from ..export.cache import ensure_exported
from ..models.generator import Refiner, count_flops, count_params
from .results import Percentiles

WARM_UP_RUNS = 20  # decoder runs before timing starts


class GeneratorInfo(NamedTuple):
    """The generator that was evaluated; the report's "generator" section, in this order."""

    weights: str  # the weights file, or "shipped"
    backend: str  # the runtime's provider, e.g. CPUExecutionProvider
    precision: str  # of the exported decoder
    gflop_per_frame: float  # the decoder, batch 1
    gflop_per_photo: float  # the encoder, once per photo
    params_decoder: int
    params_encoder: int
    resolution_px: int  # the refiner's input and output side

    @classmethod
    def of(cls, model: Refiner, weights: str | None, provider: str, precision: Precision) -> GeneratorInfo:
        flops, encoder_flops = count_flops(model)
        return cls(weights or "shipped", provider, precision, flops / 1e9, encoder_flops / 1e9,
                   count_params(model.decoder), count_params(model.encoder), model.config.resolution_px)


def _time_ms(model: Model, feed: dict[str, np.ndarray], iterations: int) -> Percentiles:
    for _ in range(WARM_UP_RUNS):
        model(**feed)
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        model(**feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return Percentiles.of(times)


def generator_cost(model: Refiner, weights: str | None = None, precision: Precision = "fp32",
                   iterations: int = 200, expected: InputContract = FRAME_PATH_CONTRACT) -> dict[str, Percentiles]:
    """Per-frame decoder time (batch 1) in torch and ONNX Runtime (``precision``), on 1 and 2 threads.

    Returns: {"torch_1_thread" | "onnxruntime_<precision>_1_thread" | ..._2_thread: p50/p95 ms}.
    """
    r = model.config.resolution_px
    rng = np.random.default_rng(0)
    feed = {"warped": rng.random((1, 3, r, r), np.float32), "drawing": rng.random((1, 3, r, r), np.float32),
            "gate": rng.random((1, 1, r, r), np.float32),
            "code": rng.standard_normal((1, model.config.code_dim)).astype(np.float32)}
    graphs = ensure_exported(Path(weights) if weights else None, precision, expected=expected)
    out: dict[str, Percentiles] = {}
    for n in (1, 2):
        runners: dict[str, Model] = {
            f"torch_{n}_thread": TorchModel(model.decoder, DECODER_INPUTS, DECODER_OUTPUTS, threads=n),
            f"onnxruntime_{precision}_{n}_thread": OnnxModel(graphs.decoder, RuntimeConfig(intra_op_threads=n))}
        for name, m in runners.items():
            out[name] = _time_ms(m, feed, iterations)
    return out
