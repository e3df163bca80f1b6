"""int8 decoder for CPUs: ONNX Runtime static quantization (QDQ), ranges calibrated on real frames.

Only the convolutions are quantized (weights per channel, int8; activations uint8); the
tanh/sigmoid head, the mask bounds and the residual blend stay float32, so the output keeps
its exact form (delta = gate * mask * (clamp(warp + residual) - warp)). Whether int8 pays off
is measured (``python -m benchmarks.frame_path``: speed; ``enliven evaluate --precision int8``: quality).
"""
from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np

from .compare import torch_outputs
from .samples import real_inputs

CALIBRATION_FRAMES = 48


class _Reader:
    """Feeds the calibration frames to ONNX Runtime's quantizer (its CalibrationDataReader protocol)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # newer onnxruntime versions may call it
        pass


def calibration_feeds(model: "Refiner", frames: int = CALIBRATION_FRAMES) -> list[dict[str, np.ndarray]]:  # noqa: F821
    """Decoder feeds (with the photo's code) of real frames of the built-in photo and motion."""
    samples = real_inputs(model.config.resolution_px, frames=frames)
    code = torch_outputs(model, {"source": samples.source})["code"]
    return [{**f, "code": code} for f in samples.decoder]


def quantize_decoder(fp32_path: Path, out_path: Path, model: "Refiner") -> Path:  # noqa: F821
    """Write the int8 version of the fp32 decoder graph ``fp32_path`` to ``out_path``."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints its progress
            quantize_static(str(prepared), str(out_path), _Reader(calibration_feeds(model)),
                            quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"], per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.Percentile,
                            extra_options={"CalibPercentile": 99.99})
    return out_path
