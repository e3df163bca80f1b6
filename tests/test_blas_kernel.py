"""numpy's OpenBLAS runs the kernels the CPU can run: enliven names them (OPENBLAS_CORETYPE) before numpy loads,
where OpenBLAS would otherwise fall back to its generic ones for a CPU model it does not know."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

import enliven

AVX512 = "flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl amx_tile\n"
AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
OLD = "flags\t\t: fpu sse2 sse3 ssse3\n"


def test_the_kernel_follows_the_instruction_sets() -> None:
    assert enliven.openblas_kernel(AVX512) == "SkylakeX"
    assert enliven.openblas_kernel(AVX2) == "Haswell"
    assert enliven.openblas_kernel(OLD) is None
    assert enliven.openblas_kernel("") is None


def _kernel_in_a_fresh_process(env: dict[str, str]) -> str:
    code = ("import enliven, numpy, json; from threadpoolctl import threadpool_info; "
            "print(json.dumps([i.get('architecture') for i in threadpool_info() if i['internal_api'] == 'openblas']))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    kernels = json.loads(out.stdout.strip().splitlines()[-1])
    assert kernels, "numpy here has no OpenBLAS"
    return kernels[0]


@pytest.mark.skipif(platform.system() != "Linux" or platform.machine() != "x86_64", reason="x86-64 Linux only")
def test_numpy_runs_the_named_kernel_and_a_users_choice_wins() -> None:
    with open("/proc/cpuinfo") as f:
        expected = enliven.openblas_kernel(f.read())
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    if expected is not None:
        assert _kernel_in_a_fresh_process(env) == expected
    assert _kernel_in_a_fresh_process({**env, "OPENBLAS_CORETYPE": "Prescott"}) == "Prescott"
