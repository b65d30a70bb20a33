"""The CUDA pack_spikes (spikes kept for backward as bytes) against the CPU kernel."""
from __future__ import annotations

import numpy as np
import pytest

from snnvae.kernels import cpu
from snnvae.kernels.cuda import launch, spikes


@pytest.mark.parametrize("on_device", [False, True], ids=["host", "device"])
def test_pack_spikes_matches_cpu(rng, dtype, on_device):
    x = (rng.random((3, 5, 7)) < 0.3).astype(dtype)            # 105 values > 32 threads
    move = launch.to_device if on_device else (lambda a: a)
    got = spikes.pack_spikes(move(x))
    assert launch.is_device_array(got) == on_device
    got = got.copy_to_host() if on_device else got
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, cpu.pack_spikes(x))


def test_pack_spikes_refuses_a_value_that_is_not_0_or_1(rng, dtype):
    x = (rng.random((3, 5, 7)) < 0.3).astype(dtype)
    x[2, 4, 6] = 0.5
    assert spikes.pack_spikes(x) is None and cpu.pack_spikes(x) is None
