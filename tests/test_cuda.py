"""Run the CUDA kernel tests (tests/cuda) in a subprocess: in the CUDA simulator always, on a
real GPU when numba finds one.

The simulator must be switched on before numba is imported, which this process has long done,
hence the subprocess. Its whole output is shown when it fails.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def run_cuda_suite(simulator: bool):
    env = dict(os.environ, SNNVAE_CUDA_TESTS="1")
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    if simulator:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-rs", str(HERE / "cuda")],
                          cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=1800)
    report = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, f"tests/cuda failed (exit {proc.returncode}):\n{report}"
    assert " passed" in proc.stdout, f"tests/cuda ran no test:\n{report}"
    return proc.stdout


@pytest.mark.slow
def test_cuda_kernels_in_the_simulator():
    run_cuda_suite(simulator=True)


def gpu_present() -> bool:
    probe = "from numba import cuda; print(cuda.is_available())"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    return out.stdout.strip() == "True"


@pytest.mark.slow
def test_cuda_kernels_on_a_gpu():
    if not gpu_present():
        pytest.skip("no CUDA GPU on this machine (numba.cuda.is_available() is False); the "
                    "same tests ran in the simulator")
    run_cuda_suite(simulator=False)
