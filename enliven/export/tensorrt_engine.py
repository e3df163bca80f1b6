"""TensorRT engines from the exported ONNX graphs (GPU machines with the `gpu` extra only).

Two ways to TensorRT, both from the same ONNX file:
- ONNX Runtime's TensorRT execution provider (what ``runtime.OnnxModel`` picks first when present),
  which builds and caches its own engine (``runtime.provider_options``: fp16 and a cache folder);
- a standalone serialized engine (``build_engine``), with an optimisation profile over the batch
  sizes the server uses, for deployments that run TensorRT directly.
On a machine without TensorRT or CUDA both raise TensorRTUnavailable with the reason.
"""
from __future__ import annotations

from pathlib import Path

from ..engine.errors import EnlivenError


class TensorRTUnavailable(EnlivenError):
    """TensorRT or a CUDA device is missing here (the reason is in the message)."""


def tensorrt_unavailable_reason() -> str | None:
    """None when a TensorRT engine can be built here, else why not (one line)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt package is not installed (pip install 'enliven[gpu]' on a CUDA machine)"
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return "this onnxruntime has no CUDA execution provider (install onnxruntime-gpu)"
    except ImportError:
        return "onnxruntime is not installed"
    import ctypes

    for lib in ("libcuda.so.1", "libcuda.so"):
        try:
            cuda = ctypes.CDLL(lib)
            count = ctypes.c_int(0)
            if cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0:
                return None
            return "no CUDA device is visible"
        except OSError:
            continue
    return "the CUDA driver (libcuda) is not installed"


def build_engine(onnx_path: Path, engine_path: Path, fp16: bool = True, max_batch: int = 16,
                 workspace_mib: int = 1024) -> Path:
    """Build a serialized TensorRT engine for ``onnx_path`` (batch 1..max_batch, optimised for 1 and 8)."""
    reason = tensorrt_unavailable_reason()
    if reason:
        raise TensorRTUnavailable(f"cannot build a TensorRT engine: {reason}")
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTUnavailable(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if fp16 and builder.platform_has_fast_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        if shape[0] == -1:
            rest = shape[1:]
            profile.set_shape(tensor.name, [1, *rest], [min(8, max_batch), *rest], [max_batch, *rest])
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTUnavailable(f"TensorRT failed to build an engine for {onnx_path}")
    engine_path.write_bytes(bytes(serialized))
    return engine_path
