"""The CUDA eval-mode blocks against the Numba CPU kernels, host and device inputs: the decoder
block (transposed conv, then tdBN -> LIF, on the device), with sparse inputs, 8 output channels
and a sample per Numba thread, so that the CPU side runs its fused pass (``scatter_block``);
and one step of a spiking linear block, sparse (the CPU's event-driven rows) and dense."""
from __future__ import annotations

import numba
import numpy as np
import pytest
from conftest import assert_matches

from snnvae.kernels import cpu
from snnvae.kernels.cuda import blocks, launch

LIF = (0.2, 0.25, 0.5, 0.0)


def _inputs(rng, has_bias):
    T, N, C_in, C_out = 2, max(3, numba.get_num_threads()), 3, 8
    x = (rng.random((T, N, C_in, 2, 3)) < 0.15).astype(np.float64)
    w = rng.normal(0, 0.6, (C_in, C_out, 3, 3))
    b = rng.normal(0, 0.1, C_out) if has_bias else None
    bn = (rng.uniform(0.5, 2.0, C_out), rng.normal(0, 0.1, C_out), 0.2,
          rng.normal(0, 0.1, C_out), rng.uniform(0.2, 1.0, C_out), 1e-5)
    return x, w, b, bn


@pytest.mark.parametrize("smooth", [False, True], ids=["spike", "smooth"])
@pytest.mark.parametrize("has_bias", [True, False], ids=["bias", "no-bias"])
def test_block_matches_the_cpu(rng, smooth, has_bias):
    x, w, b, bn = _inputs(rng, has_bias)
    want = cpu.conv_transpose2d_tdbn_lif_forward_eval(x, w, b, 2, 1, 1, *bn, *LIF, smooth)
    got = blocks.conv_transpose2d_tdbn_lif_forward_eval(x, w, b, 2, 1, 1, *bn, *LIF, smooth)
    assert isinstance(got, np.ndarray)
    assert_matches(got, want, "spikes")
    if not smooth:
        assert 0 < want.mean() < 1


def test_device_inputs_give_device_spikes(rng):
    x, w, b, bn = _inputs(rng, True)
    want = cpu.conv_transpose2d_tdbn_lif_forward_eval(x, w, b, 2, 1, 1, *bn, *LIF, False)
    got = blocks.conv_transpose2d_tdbn_lif_forward_eval(launch.to_device(x), w, b, 2, 1, 1, *bn,
                                                        *LIF, False)
    assert launch.is_device_array(got)
    assert_matches(got, want, "spikes")


@pytest.mark.parametrize("on_device", [False, True], ids=["host", "device"])
def test_block_summed_over_time_matches_the_cpu(rng, on_device):
    x, w, b, bn = _inputs(rng, True)
    want = cpu.conv_transpose2d_tdbn_lif_membrane_eval(x, w, b, 2, 1, 1, *bn, *LIF, False, 0.8)
    got = blocks.conv_transpose2d_tdbn_lif_membrane_eval(
        launch.to_device(x) if on_device else x, w, b, 2, 1, 1, *bn, *LIF, False, 0.8)
    assert launch.is_device_array(got) == on_device
    assert_matches(got, want, "spikes summed over time")
    assert np.ptp(want) > 0


@pytest.mark.parametrize("rate", [0.2, 0.9], ids=["sparse", "dense"])
@pytest.mark.parametrize("on_device", [False, True], ids=["host", "device"])
def test_linear_step_matches_the_cpu(rng, rate, on_device):
    N, F_in, F_out = 3, 5, 6
    x = (rng.random((N, F_in)) < rate).astype(np.float64)
    wt, b = rng.normal(0, 0.6, (F_in, F_out)), rng.normal(0, 0.1, F_out)
    bn = (rng.uniform(0.5, 2.0, F_out), rng.normal(0, 0.1, F_out), 0.4,
          rng.normal(0, 0.1, F_out), rng.uniform(0.2, 1.0, F_out), 1e-5)
    u_prev, o_prev = rng.normal(0, 0.3, (N, F_out)), (rng.random((N, F_out)) < 0.3) * 1.0
    want = cpu.linear_tdbn_lif_step_eval(x, wt, b, *bn, 0.2, 0.25, u_prev, o_prev)
    arrays = [launch.to_device(a) if on_device else a for a in (x, wt, b, u_prev, o_prev)]
    got = blocks.linear_tdbn_lif_step_eval(*arrays[:3], *bn, 0.2, 0.25, *arrays[3:])
    for g, w, what in zip(got, want, ("spikes", "membrane")):
        assert launch.is_device_array(g) == on_device
        assert_matches(g, w, what)
    assert 0 < want[0].mean() < 1
