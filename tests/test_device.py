"""snnvae.device on the CPU: where arrays live, moves by name, and that a CPU user never loads
numba.cuda. (Device arrays themselves are tested in tests/cuda, in the CUDA simulator.)"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from snnvae import device
from snnvae.models import FSVAE, FSVAEConfig

TINY = FSVAEConfig(hidden_channels=(3, 4), input_size=8, latent_dim=4, k=2, timesteps=3)


def test_host_arrays_stay_where_they_are():
    a = np.arange(6.0).reshape(2, 3)
    assert not device.is_device(a) and device.device_of(a) == "cpu"
    assert device.to_host(a) is a and device.place_like(a, np.zeros(1)) is a
    assert device.to_host(2.5) == 2.5
    moved = device.move(a, "cpu")
    assert isinstance(moved, np.ndarray) and np.array_equal(moved, a)
    transposed = device.contiguous(a.T)
    assert transposed.flags.c_contiguous and np.array_equal(transposed, a.T)
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        device.move(a, "gpu")


def test_a_cpu_run_never_imports_numba_cuda():
    script = (
        "import sys, numpy as np\n"
        "from snnvae.models import FSVAE, FSVAEConfig\n"
        "model = FSVAE(FSVAEConfig(hidden_channels=(3, 4), input_size=8, latent_dim=4, k=2, "
        "timesteps=3), rng=np.random.default_rng(0))\n"
        "model.training_losses(np.zeros((2, 1, 8, 8)), np.random.default_rng(0), 0, 1)"
        "['loss'].backward()\n"
        "model.state_dict(); model.device\n"
        "print(sorted(m for m in sys.modules if 'cuda' in m))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_moving_a_model_to_cuda_without_a_gpu_says_what_to_do():
    from snnvae.kernels.cuda import launch
    if launch.gpu_found():
        pytest.skip("a GPU (or the simulator) is present: tests/cuda moves models there")
    model = FSVAE(TINY, rng=np.random.default_rng(0))
    with pytest.raises(launch.CudaUnavailableError, match=r"cuda\.detect\(\)"):
        model.to_device("cuda")
    assert model.device == "cpu"
