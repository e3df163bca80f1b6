"""One interface over the inference back-ends: torch modules and ONNX Runtime sessions.

ONNX Runtime picks its execution provider automatically: TensorRT, then CUDA, then CPU,
whichever this machine's onnxruntime build offers (the `gpu` extra brings the GPU ones).
Both back-ends are called the same way, ``model(name=array, ...) -> {name: array}``, with
float32 NCHW arrays, so the Animator and the benchmarks don't care which one runs.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .defaults import cache_root
from .errors import ModelFileError

log = logging.getLogger(__name__)

PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class Model(Protocol):
    """What the engine needs of a model: named float32 arrays in, named arrays out."""

    backend: str  # "torch" or "onnxruntime"
    provider: str  # the device it runs on, e.g. "CPUExecutionProvider" or "torch:cpu"
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class RuntimeConfig:
    providers: tuple[str, ...] | None = None  # None: the best of PROVIDER_PREFERENCE available here
    intra_op_threads: int | None = None  # None: the CPU cores this process may use, at most 4
    spin: bool = False  # busy-wait between ops: faster alone, but steals the core the landmarks need


def default_threads() -> int:
    """Threads for one inference: the cores this process may use, capped at 4 (small nets stop scaling)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 4))


_BLAS_LIMITED = False


def single_thread_blas() -> None:
    """Hold numpy's BLAS (OpenBLAS) to one thread in this process; idempotent.

    The warp's spline solve and grid matmuls are small: a second BLAS thread gains nothing, and on a
    busy 2-core machine it waits for a descheduled partner (measured: solve 1.5 ms -> 7 ms, the
    whole warp 4.9 ms -> 12.8 ms while a training job held one core).
    """
    global _BLAS_LIMITED
    if not _BLAS_LIMITED:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")
        _BLAS_LIMITED = True


def pick_providers(preferred: tuple[str, ...] | None = None) -> list[str]:
    """The execution providers to ask for, best first, among those this onnxruntime build has."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    wanted = preferred or PROVIDER_PREFERENCE
    chosen = [p for p in wanted if p in available]
    if not chosen:
        raise ModelFileError(f"none of the execution providers {list(wanted)} is available; "
                             f"this onnxruntime offers {sorted(available)}")
    return chosen


def provider_options(chosen: list[str], cache_dir: Path | None = None) -> list[str | tuple[str, dict[str, str]]]:
    """``chosen`` with the options each provider needs: TensorRT gets fp16 and an engine cache
    (without one, every new session would rebuild its engine, which takes minutes)."""
    out: list[str | tuple[str, dict[str, str]]] = []
    for name in chosen:
        if name == "TensorrtExecutionProvider":
            folder = cache_dir or cache_root() / "tensorrt"
            folder.mkdir(parents=True, exist_ok=True)
            out.append((name, {"trt_fp16_enable": "True", "trt_engine_cache_enable": "True",
                               "trt_engine_cache_path": str(folder), "trt_timing_cache_enable": "True"}))
        else:
            out.append(name)
    return out


def _ort_errors() -> tuple[type[BaseException], ...]:
    """onnxruntime's own exception classes (not subclasses of RuntimeError)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoModel", "NoSuchFile",
             "NotImplemented", "RuntimeException", "EPFail", "ModelLoadCanceled")
    return tuple(getattr(state, n) for n in names if isinstance(getattr(state, n, None), type))


class OnnxModel:
    """An ONNX file run by ONNX Runtime on the best provider available."""

    backend = "onnxruntime"

    def __init__(self, path: str | os.PathLike[str], config: RuntimeConfig = RuntimeConfig()) -> None:
        import onnxruntime as ort

        file = Path(path)
        if not file.is_file():
            raise ModelFileError(f"model file not found: {file}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = config.intra_op_threads or default_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if not config.spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(file), options,
                                                 providers=provider_options(pick_providers(config.providers)))
        except (RuntimeError, ValueError, *_ort_errors()) as e:
            raise ModelFileError(f"cannot load model {file}: {str(e).splitlines()[0][:200]}") from e
        self.provider = self._session.get_providers()[0]
        self.input_names = tuple(i.name for i in self._session.get_inputs())
        self.output_names = tuple(o.name for o in self._session.get_outputs())
        log.info("loaded %s on %s with %d threads", file.name, self.provider, options.intra_op_num_threads)

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self._session.run(None, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()})
        return dict(zip(self.output_names, outputs))


class _TorchThreads:
    """Run torch with ``n`` intra-op threads inside the block, then restore (a process-wide setting)."""

    def __init__(self, n: int | None) -> None:
        self.n = n

    def __enter__(self) -> None:
        import torch

        self.saved = torch.get_num_threads()
        if self.n and self.n != self.saved:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        import torch

        if torch.get_num_threads() != self.saved:
            torch.set_num_threads(self.saved)


class TorchModel:
    """A torch module behind the same interface (reference and fallback; float32, inference mode).

    ``threads``: torch intra-op threads during a call (None: torch's setting). On a busy 2-core
    machine a second torch thread waiting for a descheduled partner made a 128 px refiner call
    ~100x slower (12 ms with 1 thread, 900 ms with 2), so the engine asks for 1.
    """

    backend = "torch"

    def __init__(self, module: "torch.nn.Module", input_names: tuple[str, ...],  # noqa: F821
                 output_names: tuple[str, ...], device: str = "cpu", threads: int | None = None) -> None:
        self._module = module.eval().to(device)
        self._device = device
        self._threads = threads
        self.provider = f"torch:{device}"
        self.input_names = input_names
        self.output_names = output_names

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode(), _TorchThreads(self._threads):
            args = [torch.from_numpy(np.ascontiguousarray(inputs[n], dtype=np.float32)).to(self._device)
                    for n in self.input_names]
            out = self._module(*args)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return {n: o.detach().cpu().numpy() for n, o in zip(self.output_names, out)}
