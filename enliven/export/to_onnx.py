"""torch -> ONNX for the refiner: two graphs (encoder once per photo, decoder per frame).

Opset 17 by default; the batch axis is dynamic ("batch") or fixed (static, e.g. 1 for the
single-stream runtime, 8 for a TensorRT profile). Each file passes ``onnx.checker`` (full
check, shapes inferred) and is compared with torch on random and real inputs before use.
fp16 graphs keep float32 inputs and outputs (casts inside), so callers never change.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path


from ..engine.refine import (
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    Precision,
)
from .graphs import OPSET, ExportedGenerator, ExportError
from .quantize import quantize_decoder

log = logging.getLogger(__name__)

def _example(cfg: "GeneratorConfig", batch: int) -> tuple[tuple, tuple]:  # noqa: F821
    import torch

    r = cfg.resolution_px
    g = torch.Generator().manual_seed(0)
    img = lambda c: torch.rand(batch, c, r, r, generator=g)  # noqa: E731
    return (img(3),), (img(3), img(3), img(1), torch.randn(batch, cfg.code_dim, generator=g))


def _half(module: "torch.nn.Module") -> "torch.nn.Module":  # noqa: F821
    """A copy of ``module`` that runs in fp16 with float32 inputs and outputs (casts at both ends)."""
    import copy

    import torch

    class Half(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = copy.deepcopy(inner).half()

        def forward(self, *args: torch.Tensor):  # type: ignore[no-untyped-def]
            out = self.inner(*(a.half() for a in args))
            out = out if isinstance(out, (tuple, list)) else (out,)
            return tuple(o.float() for o in out)

    return Half(module).eval()


def export_module(module: "torch.nn.Module", example: tuple, path: Path, inputs: tuple[str, ...],  # noqa: F821
                  outputs: tuple[str, ...], batch: int | None, opset: int = OPSET) -> Path:
    """Export ``module`` traced on ``example`` to ``path`` and check it with onnx.checker (full check)."""
    import onnx
    import torch

    dynamic = None if batch is not None else {n: {0: "batch"} for n in (*inputs, *outputs)}
    with torch.no_grad():
        torch.onnx.export(module, example, str(path), dynamo=False, opset_version=opset, input_names=list(inputs),
                          output_names=list(outputs), dynamic_axes=dynamic, do_constant_folding=True)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"{path.name} fails onnx.checker: {str(e).splitlines()[0]}") from e
    return path


def export_generator(model: "Refiner", out_dir: Path, *, batch: int | None = None,  # noqa: F821
                     precision: Precision = "fp32", opset: int = OPSET, stem: str = "refiner") -> ExportedGenerator:
    """Export ``model`` as ``<stem>.encoder.onnx`` and ``<stem>.decoder.onnx`` in ``out_dir``.

    batch: None = dynamic batch axis; an int = static batch of that size.
    precision: fp32; fp16 (GPU: halves memory traffic; inputs/outputs stay float32); int8 (the decoder
    quantized for CPU, calibrated on real frames; the encoder runs once per photo and stays fp32).
    """
    if opset < 17:
        raise ExportError(f"opset {opset} is too old; enliven exports opset 17 or newer")
    if batch is not None and batch < 1:
        raise ExportError(f"static batch must be >= 1; got {batch}")
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    model = model.eval()
    enc_example, dec_example = _example(cfg, batch or 1)
    enc, dec = model.encoder, model.decoder
    if precision == "fp16":
        enc, dec = _half(enc), _half(dec)
    elif precision not in ("fp32", "int8"):
        raise ExportError(f"precision must be fp32, fp16 or int8; got {precision!r}")
    enc_path = export_module(enc, enc_example, out_dir / f"{stem}.encoder.onnx", ENCODER_INPUTS, ENCODER_OUTPUTS,
                             batch, opset)
    dec_path = out_dir / f"{stem}.decoder.onnx"
    if precision == "int8":
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            fp32 = export_module(dec, dec_example, Path(tmp) / "decoder.fp32.onnx", DECODER_INPUTS, DECODER_OUTPUTS,
                                 batch, opset)
            quantize_decoder(fp32, dec_path, model)
    else:
        export_module(dec, dec_example, dec_path, DECODER_INPUTS, DECODER_OUTPUTS, batch, opset)
    return ExportedGenerator(enc_path, dec_path, cfg.resolution_px, cfg.code_dim, batch, precision, opset)
