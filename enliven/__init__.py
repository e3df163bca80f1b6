"""enliven: real-time portrait animation driven by face landmarks."""
from __future__ import annotations

import os
import platform

__version__ = "0.1.0"

# OpenBLAS kernels by the CPU's instruction sets (x86-64 Linux), read from /proc/cpuinfo: first AVX-512, then AVX2.
_OPENBLAS_KERNELS = (("SkylakeX", {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}),
                     ("Haswell", {"avx2", "fma"}))


def openblas_kernel(cpuinfo: str) -> str | None:
    """The OpenBLAS kernel family the CPU described by ``cpuinfo`` (/proc/cpuinfo's text) can run, or None.

    numpy's bundled OpenBLAS picks its kernels from the CPU's model number, and falls back to its generic
    SSE3 ones ("Prescott") for a model it does not know, as on an Intel Xeon VM of this project. Forced onto
    those kernels, the 2-core EPYC runs the warp's spline products 2-9x slower (the warp at 256: 6.1 instead
    of 4.3 ms). The kernels named here need only the instruction sets the CPU lists.
    """
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            break
    return next((name for name, needs in _OPENBLAS_KERNELS if needs <= flags), None)


def _choose_openblas_kernel() -> None:
    """Set OPENBLAS_CORETYPE (unless set already) before numpy loads OpenBLAS; child processes inherit it."""
    if "OPENBLAS_CORETYPE" in os.environ or platform.system() != "Linux" or platform.machine() != "x86_64":
        return
    try:
        with open("/proc/cpuinfo") as f:
            kernel = openblas_kernel(f.read(1 << 16))
    except OSError:
        return
    if kernel is not None:
        os.environ["OPENBLAS_CORETYPE"] = kernel


_choose_openblas_kernel()
