"""A GeneratorRunner for the shipped weights (or a weights file), on ONNX Runtime or torch.

ONNX Runtime graphs are exported on first use and cached (``cache.ensure_exported``); the torch
backend runs the module itself (it needs torch, imported only here and in ``enliven.models``).
"""
from __future__ import annotations

from pathlib import Path

from ..engine.contract import FRAME_PATH_CONTRACT, InputContract
from ..engine.refine import (
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    Backend,
    GeneratorRunner,
    Precision,
)
from ..engine.runtime import OnnxModel, RuntimeConfig, TorchModel
from ..models.shipped import shipped_warps
from .cache import ensure_exported


def open_runner(weights: str | Path | None = None, backend: Backend = "onnxruntime", precision: Precision = "fp32",
                threads: int | None = None, expected: InputContract = FRAME_PATH_CONTRACT,
                generator: str | None = None) -> GeneratorRunner:
    """A runner for the shipped generator ``generator`` (None: the default one), or a weights file, on ``backend``.

    onnxruntime: the graphs are exported once per weights file and precision and cached (see
    ``enliven.export.cache``); torch: the module itself, float32 only.
    ``expected``: the input contract the frame path feeds (the weights must have been trained under it).
    The runner refines one frame per call, so its graphs have a fixed batch of 1: ONNX Runtime then plans
    static shapes (int8 decoder on one thread 7.7 -> 6.8 ms on a busy 2-core EPYC; fp32 unchanged).
    Raises: ModelFileError for a missing/corrupt weights file or one trained for another input; ValueError for
    a bad combination.
    """
    if backend == "torch":
        if precision != "fp32":
            raise ValueError(f"the torch backend runs fp32 only; got precision {precision!r}")
        from ..models.generator import load_generator

        model = load_generator(generator, path=Path(weights) if weights else None, expected=expected)
        t = threads or 1  # see TorchModel: a second torch thread stalls on a busy 2-core machine
        return GeneratorRunner(TorchModel(model.encoder, ENCODER_INPUTS, ENCODER_OUTPUTS, threads=t),
                               TorchModel(model.decoder, DECODER_INPUTS, DECODER_OUTPUTS, threads=t),
                               model.config.resolution_px)
    if backend != "onnxruntime":
        raise ValueError(f"backend must be 'onnxruntime' or 'torch'; got {backend!r}")
    graphs = ensure_exported(Path(weights) if weights else None, precision, batch=1, expected=expected,
                             generator=generator)
    cfg = RuntimeConfig(intra_op_threads=threads)
    return GeneratorRunner(OnnxModel(graphs.encoder, cfg), OnnxModel(graphs.decoder, cfg), graphs.resolution_px)


def shipped_refiner_warps(generator: str) -> frozenset[int]:
    """The analytic warp versions the shipped weights of ``generator`` are valid on (``models.shipped``)."""
    return shipped_warps(generator)
