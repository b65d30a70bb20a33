"""One eval-mode step of a spiking linear block as one operation (``linear_tdbn_lif_step_eval``):
the fused Numba kernel against the CPU's three separate kernels and the NumPy reference, both of
its routes (event-driven rows for sparse inputs, BLAS for dense ones), the layer's ``step`` over
a whole sequence against its eval-mode forward, and clear errors.

Weights and biases are multiples of 1/64, so every order of the additions gives the same y and
the fused kernel must match the separate kernels bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

from snnvae import F, Tensor
from snnvae.kernels import cpu, linear_step, numpy_ref
from snnvae.nn import SpikingLinear, calibrate_running_statistics

TOL = {np.float32: dict(rtol=2e-6, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-12)}
VTH, TAU = 0.2, 0.25


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def dyadic(rng, shape, dtype):
    return (rng.integers(-64, 64, shape) / 64).astype(dtype)


def step_case(rng, dtype, rate, has_bias=True, N=9, F_in=13, F_out=21):
    x = (rng.random((N, F_in)) < rate).astype(dtype)
    wt = dyadic(rng, (F_in, F_out), dtype)
    b = dyadic(rng, F_out, dtype) if has_bias else None
    bn = (rng.uniform(0.5, 1.5, F_out).astype(dtype), rng.normal(0, 0.3, F_out).astype(dtype),
          0.4, rng.normal(0, 0.3, F_out).astype(dtype), rng.uniform(0.5, 1.5, F_out).astype(dtype),
          1e-5)
    u_prev = rng.normal(0, 0.3, (N, F_out)).astype(dtype)
    o_prev = (rng.random((N, F_out)) < 0.3).astype(dtype)
    return x, wt, b, bn, u_prev, o_prev


def separate_cpu_kernels(x, wt, b, bn, u_prev, o_prev):
    """The same step as the CPU backend's linear, tdBN (eval) and LIF-step kernels."""
    y = cpu.linear_forward(x, np.ascontiguousarray(wt.T), b)
    N, F_out = y.shape
    y = cpu.tdbn_forward_eval(y.reshape(N, F_out, 1), *bn)[0]
    o, u = cpu.lif_step(y.reshape(-1), u_prev.reshape(-1), o_prev.reshape(-1), VTH, TAU)
    return o.reshape(N, F_out), u.reshape(N, F_out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rate", [0.0, 0.15, 0.45, 0.95])
@pytest.mark.parametrize("has_bias", [True, False], ids=["bias", "no-bias"])
def test_fused_step_equals_the_separate_kernels_and_the_reference(rng, dtype, rate, has_bias):
    x, wt, b, bn, u_prev, o_prev = step_case(rng, dtype, rate, has_bias)
    o, u = cpu.linear_tdbn_lif_step_eval(x, wt, b, *bn, VTH, TAU, u_prev, o_prev)
    o_sep, u_sep = separate_cpu_kernels(x, wt, b, bn, u_prev, o_prev)
    assert o.dtype == u.dtype == dtype and o.shape == u.shape == (9, 21)
    np.testing.assert_array_equal(u, u_sep)            # the same arithmetic, in the same order
    np.testing.assert_array_equal(o, o_sep)
    o_ref, u_ref = numpy_ref.linear_tdbn_lif_step_eval(x, wt, b, *bn, VTH, TAU, u_prev, o_prev)
    np.testing.assert_allclose(u, u_ref, **TOL[dtype])
    np.testing.assert_array_equal(o, o_ref)
    assert 0 < o.mean() < 1


@pytest.mark.parametrize("rate", [0.1, 0.9])
def test_both_routes_give_the_same_step(rng, monkeypatch, rate):
    """The event-driven rows (sparse input) and BLAS then the same rows (dense input) agree
    whichever route the input's density would pick, and real-valued inputs are multiplied."""
    x, wt, b, bn, u_prev, o_prev = step_case(rng, np.float64, rate)
    x = x * dyadic(rng, x.shape, np.float64)          # values other than 0 and 1 as well
    results = []
    for max_rate in (1.0, -1.0):                       # every input sparse / every input dense
        monkeypatch.setattr(linear_step, "EVENTS_MAX_RATE", max_rate)
        results.append(cpu.linear_tdbn_lif_step_eval(x, wt, b, *bn, VTH, TAU, u_prev, o_prev))
    for a, c in zip(*results):
        np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(results[0][1], separate_cpu_kernels(x, wt, b, bn, u_prev,
                                                                      o_prev)[1])


def calibrated_block(rng, dtype=np.float64):
    """A spiking linear block (alpha 2, as in FSVAE's latent networks) with running statistics
    taken from a batch of spikes, in eval mode, and a sequence of input spikes (T, N, F_in)."""
    block = SpikingLinear(12, 10, alpha=2.0, rng=rng, dtype=dtype)
    x = (rng.random((6, 5, 12)) < 0.3).astype(dtype)
    calibrate_running_statistics(block, lambda: block(Tensor(x)))
    block.eval()
    return block, x


def test_stepping_a_block_equals_its_eval_forward(rng, backend_name):
    block, x = calibrated_block(rng)
    whole = block(Tensor(x)).data
    state, steps = None, []
    for t in range(x.shape[0]):
        o, state = block.step(x[t], state)
        steps.append(o)
    assert 0 < whole.mean() < 1
    np.testing.assert_array_equal(np.stack(steps), whole)
    u, o, weight_t = state
    assert weight_t.shape == (12, 10) and weight_t.flags.c_contiguous
    np.testing.assert_array_equal(weight_t, block.weight.data.T)


def test_a_block_without_tdbn_steps_the_separate_way(rng):
    block = SpikingLinear(12, 10, bn=False, rng=rng, dtype=np.float64)
    block.eval()
    x = (rng.random((4, 3, 12)) < 0.5).astype(np.float64)
    whole = block(Tensor(x)).data
    state, steps = None, []
    for t in range(4):
        o, state = block.step(x[t], state)
        steps.append(o)
    np.testing.assert_array_equal(np.stack(steps), whole)


def test_clear_errors(rng):
    x, wt, b, bn, u_prev, o_prev = step_case(rng, np.float64, 0.3)
    gamma, beta, scale, mean, var, eps = bn
    with pytest.raises(ValueError, match="do not fit"):
        F.linear_tdbn_lif_step_eval(x, wt[:-1], b, gamma, beta, mean, var, u_prev, o_prev,
                                    scale=scale)
    with pytest.raises(ValueError, match="do not fit"):
        F.linear_tdbn_lif_step_eval(x, wt, b, gamma, beta, mean, var, u_prev[:-1], o_prev,
                                    scale=scale)
    with pytest.raises(TypeError, match="one dtype"):
        F.linear_tdbn_lif_step_eval(x, wt.astype(np.float32), b, gamma, beta, mean, var, u_prev,
                                    o_prev, scale=scale)
    with pytest.raises(TypeError, match="float32 or float64"):
        F.linear_tdbn_lif_step_eval(x.astype(np.int64), wt, b, gamma, beta, mean, var, u_prev,
                                    o_prev, scale=scale)
    block, x_seq = calibrated_block(rng)
    block.train()
    with pytest.raises(RuntimeError, match="eval mode"):
        block.step(x_seq[0])
