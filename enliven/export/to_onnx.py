"""torch -> ONNX for the refiner: two graphs (encoder once per photo, decoder per frame).

Opset 17 by default; the batch axis is dynamic ("batch") or fixed (static, e.g. 1 for the
single-stream runtime, 8 for a TensorRT profile). Each file passes ``onnx.checker`` (full
check, shapes inferred) and is compared with torch on random and real inputs before use.
fp16 graphs keep float32 inputs and outputs (casts inside), so callers never change.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine.errors import EnlivenError
from ..engine.refine import DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_INPUTS, ENCODER_OUTPUTS, Precision

log = logging.getLogger(__name__)

OPSET = 17
TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "int8": None}  # max |onnx - torch| allowed; int8 is judged by evaluate


class ExportError(EnlivenError):
    """The export or its checks failed (a bug or an unsupported setting, not the user's input)."""


@dataclass(frozen=True)
class ExportedGenerator:
    """Paths of an exported refiner and what it was exported as."""

    encoder: Path
    decoder: Path
    resolution_px: int
    code_dim: int
    batch: int | None  # None: dynamic batch axis
    precision: Precision
    opset: int = OPSET


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
        from .quantize import quantize_decoder

        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            fp32 = export_module(dec, dec_example, Path(tmp) / "decoder.fp32.onnx", DECODER_INPUTS, DECODER_OUTPUTS,
                                 batch, opset)
            quantize_decoder(fp32, dec_path, model)
    else:
        export_module(dec, dec_example, dec_path, DECODER_INPUTS, DECODER_OUTPUTS, batch, opset)
    return ExportedGenerator(enc_path, dec_path, cfg.resolution_px, cfg.code_dim, batch, precision, opset)


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
    from ..engine.runtime import OnnxModel, RuntimeConfig
    from .samples import real_inputs

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
