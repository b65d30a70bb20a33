"""The CUDA neuron, tdBN and temporal kernels against the Numba CPU kernels, same inputs.

Shapes are tiny (the simulator runs every CUDA thread as a Python thread) but larger than the
simulator's single block of 32 threads where it matters, so that the grid-stride loops wrap:
70 neurons for the LIF, 40 values per channel and 3 channels (one block takes them in turn)
for tdBN.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_matches

from snnvae.kernels import cpu, numpy_ref
from snnvae.kernels.cuda import batchnorm, launch, neuron


VTH, TAU, AA = 0.2, 0.25, 0.5
T, M = 4, 70
CENTERS = [0.0, VTH]          # the surrogate window's centre: 0 (the official quirk) or Vth

# Spikes and the surrogate window are discontinuous in the membrane potential u: o jumps at
# u = Vth, h'(u) (and the kinks of the smooth stand-in) at u = centre -+ aa. The CUDA kernels
# compute u with the CPU's operations, but not always in the same order (a GPU compiler fuses
# multiply-adds; the batch mean is summed in another order), so a float32 u can differ by an
# ulp, and a u within an ulp of a discontinuity would flip a spike and everything after it.
# So the inputs are drawn again until every u (computed in float64) is MARGIN away from every
# discontinuity: the comparison can then not flip, whatever the device. (float64 needs no such
# care in practice; the same rule is applied to both dtypes for simplicity.)
MARGIN = 1e-4


def _discontinuities(center):
    return (VTH, center - AA, center + AA)


def _clear(u, center):
    return all(np.min(np.abs(u - point)) > MARGIN for point in _discontinuities(center))


def _draw_clear(draw, potentials, center, tries=50):
    """draw() -> inputs, redrawn until potentials(inputs) keeps clear of the discontinuities."""
    for _ in range(tries):
        inputs = draw()
        if _clear(potentials(inputs), center):
            return inputs
    raise AssertionError("could not draw inputs away from the spike threshold")


# --------------------------------------------------------------------------------------------
# LIF
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("detach_reset", [False, True], ids=["reset", "detached"])
@pytest.mark.parametrize("center", CENTERS, ids=["c0", "cVth"])
@pytest.mark.parametrize("smooth", [False, True], ids=["spike", "smooth"])
def test_lif_forward_and_backward(rng, dtype, smooth, center, detach_reset):
    x = _draw_clear(lambda: rng.normal(0.15, 0.5, (T, M)).astype(dtype),
                    lambda x: numpy_ref.lif_forward(x.astype(np.float64), VTH, TAU, AA, center,
                                                    smooth)[1], center)
    o, u = neuron.lif_forward(x, VTH, TAU, AA, center, smooth)
    o_cpu, u_cpu = cpu.lif_forward(x, VTH, TAU, AA, center, smooth)
    assert_matches(o, o_cpu, what="o")
    assert_matches(u, u_cpu, what="u")
    if not smooth:
        assert 0 < o_cpu.mean() < 1, "the inputs should make some neurons fire, not all"

    go = rng.normal(size=(T, M)).astype(dtype)
    gx = neuron.lif_backward(go, u_cpu, o_cpu, TAU, AA, center, detach_reset)
    assert_matches(gx, cpu.lif_backward(go, u_cpu, o_cpu, TAU, AA, center, detach_reset),
                   what="gx")


def test_lif_forward_reads_any_time_first_shape(rng, dtype):
    x = rng.normal(0.15, 0.5, (T, 2, 5, 7)).astype(dtype)
    o, u = neuron.lif_forward(x, VTH, TAU, AA, 0.0, True)
    o_cpu, u_cpu = cpu.lif_forward(x.reshape(T, -1), VTH, TAU, AA, 0.0, True)
    assert_matches(o, o_cpu.reshape(x.shape), what="o")
    assert_matches(u, u_cpu.reshape(x.shape), what="u")


def test_lif_step_by_step_is_the_whole_sequence(rng, dtype):
    x = _draw_clear(lambda: rng.normal(0.15, 0.5, (T, M)).astype(dtype),
                    lambda x: numpy_ref.lif_forward(x.astype(np.float64), VTH, TAU, AA, 0.0,
                                                    False)[1], 0.0)
    o_all, u_all = cpu.lif_forward(x, VTH, TAU, AA, 0.0, False)
    # the carried state may come in another dtype: it is cast to x_t's, as on the CPU
    u_prev, o_prev = np.zeros(M), np.zeros(M)
    for t in range(T):
        o, u = neuron.lif_step(x[t], u_prev, o_prev, VTH, TAU)
        o_cpu, u_cpu = cpu.lif_step(x[t], u_prev, o_prev, VTH, TAU)
        assert_matches(o, o_cpu, what=f"o at t={t}")
        assert_matches(u, u_cpu, what=f"u at t={t}")
        assert_matches(u, u_all[t], what=f"u at t={t} vs the sequence")
        assert_matches(o, o_all[t], what=f"o at t={t} vs the sequence")
        u_prev, o_prev = u, o


# --------------------------------------------------------------------------------------------
# PSP and membrane output
# --------------------------------------------------------------------------------------------


def test_psp_forward_and_backward(rng, dtype):
    x = rng.normal(size=(T, M)).astype(dtype)
    g = rng.normal(size=(T, M)).astype(dtype)
    assert_matches(neuron.psp_forward(x, 2.0), cpu.psp_forward(x, 2.0), what="psp")
    assert_matches(neuron.psp_backward(g, 2.0), cpu.psp_backward(g, 2.0), what="psp grad")


def test_membrane_forward_and_backward(rng, dtype):
    x = rng.normal(size=(T, M)).astype(dtype)
    g = rng.normal(size=M).astype(dtype)
    assert_matches(neuron.membrane_forward(x, 0.8), cpu.membrane_forward(x, 0.8), what="y")
    assert_matches(neuron.membrane_backward(g, T, 0.8), cpu.membrane_backward(g, T, 0.8),
                   what="gx")


# --------------------------------------------------------------------------------------------
# tdBN
# --------------------------------------------------------------------------------------------

BN_SHAPE = (8, 3, 5)          # (M, C, S): n = 40 values per channel, more than 32 threads
SCALE, EPS = 0.2, 1e-5


def _bn_parameters(rng, C, dtype):
    gamma = rng.uniform(0.5, 1.5, C).astype(dtype)
    beta = rng.normal(0.0, 0.1, C).astype(dtype)
    return gamma, beta


def test_tdbn_train_forward_and_backward(rng, dtype):
    x = rng.normal(0.3, 2.0, BN_SHAPE).astype(dtype)
    gamma, beta = _bn_parameters(rng, BN_SHAPE[1], dtype)
    got = batchnorm.tdbn_forward_train(x, gamma, beta, SCALE, EPS)
    want = cpu.tdbn_forward_train(x, gamma, beta, SCALE, EPS)
    for name, g, w in zip(("y", "xhat", "invstd", "mean", "var"), got, want):
        assert_matches(g, w, what=name)

    _, xhat, invstd, _, _ = want
    gy = rng.normal(size=BN_SHAPE).astype(dtype)
    got = batchnorm.tdbn_backward_train(gy, xhat, invstd, gamma, SCALE)
    want = cpu.tdbn_backward_train(gy, xhat, invstd, gamma, SCALE)
    for name, g, w in zip(("gx", "ggamma", "gbeta"), got, want):
        assert_matches(g, w, what=name)


@pytest.mark.parametrize("stats_dtype", [np.float64, None], ids=["stats64", "stats_like_x"])
def test_tdbn_eval_forward_and_backward(rng, dtype, stats_dtype):
    x = rng.normal(0.3, 2.0, BN_SHAPE).astype(dtype)
    gamma, beta = _bn_parameters(rng, BN_SHAPE[1], dtype)
    running_mean = rng.normal(0.3, 0.5, BN_SHAPE[1]).astype(stats_dtype or dtype)
    running_var = rng.uniform(0.5, 4.0, BN_SHAPE[1]).astype(stats_dtype or dtype)
    got = batchnorm.tdbn_forward_eval(x, gamma, beta, SCALE, running_mean, running_var, EPS)
    want = cpu.tdbn_forward_eval(x, gamma, beta, SCALE, running_mean, running_var, EPS)
    for name, g, w in zip(("y", "xhat", "invstd"), got, want):
        assert_matches(g, w, what=name)

    _, xhat, invstd = want
    gy = rng.normal(size=BN_SHAPE).astype(dtype)
    got = batchnorm.tdbn_backward_eval(gy, xhat, invstd, gamma, SCALE)
    want = cpu.tdbn_backward_eval(gy, xhat, invstd, gamma, SCALE)
    for name, g, w in zip(("gx", "ggamma", "gbeta"), got, want):
        assert_matches(g, w, what=name)


# --------------------------------------------------------------------------------------------
# tdBN + LIF, fused
# --------------------------------------------------------------------------------------------

FUSED_SHAPE = (3, 3, 3, 5)    # (T, N, C, S): 45 neurons per step, n = 45 values per channel


def _fused_inputs(rng, dtype, center, smooth, batch_stats):
    """x, gamma, beta, running stats, with every membrane potential clear of the threshold."""
    C = FUSED_SHAPE[2]
    gamma, beta = _bn_parameters(rng, C, dtype)
    running = (rng.normal(0.3, 0.5, C), rng.uniform(0.5, 4.0, C))

    def potentials(x):
        if batch_stats:
            _, mean, _, invstd = cpu.tdbn_lif_forward_train(x, gamma, beta, SCALE, EPS, VTH, TAU,
                                                            AA, center, smooth)
        else:
            _, mean, invstd = cpu.tdbn_lif_forward_eval(x, gamma, beta, SCALE, *running, EPS,
                                                        VTH, TAU, AA, center, smooth)
        f64 = [a.astype(np.float64) for a in (x, mean, invstd, gamma, beta)]
        return numpy_ref._bn_lif_recompute(f64[0], *f64[1:], SCALE, VTH, TAU, AA, center,
                                           smooth)[2]

    x = _draw_clear(lambda: rng.normal(0.3, 2.0, FUSED_SHAPE).astype(dtype), potentials, center)
    return x, gamma, beta, running


@pytest.mark.parametrize("batch_stats", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("detach_reset", [False, True], ids=["reset", "detached"])
@pytest.mark.parametrize("center", CENTERS, ids=["c0", "cVth"])
@pytest.mark.parametrize("smooth", [False, True], ids=["spike", "smooth"])
def test_tdbn_lif_forward_and_backward(rng, dtype, smooth, center, detach_reset, batch_stats):
    x, gamma, beta, running = _fused_inputs(rng, dtype, center, smooth, batch_stats)
    lif_args = (VTH, TAU, AA, center, smooth)
    if batch_stats:
        got = batchnorm.tdbn_lif_forward_train(x, gamma, beta, SCALE, EPS, *lif_args)
        want = cpu.tdbn_lif_forward_train(x, gamma, beta, SCALE, EPS, *lif_args)
        names = ("o", "mean", "var", "invstd")
    else:
        got = batchnorm.tdbn_lif_forward_eval(x, gamma, beta, SCALE, *running, EPS, *lif_args)
        want = cpu.tdbn_lif_forward_eval(x, gamma, beta, SCALE, *running, EPS, *lif_args)
        names = ("o", "mean", "invstd")
    for name, g, w in zip(names, got, want):
        assert_matches(g, w, what=name)

    mean, invstd = want[1], want[-1]
    go = rng.normal(size=FUSED_SHAPE).astype(dtype)
    got = batchnorm.tdbn_lif_backward(go, x, mean, invstd, gamma, beta, SCALE, *lif_args,
                                      detach_reset, batch_stats)
    want = cpu.tdbn_lif_backward(go, x, mean, invstd, gamma, beta, SCALE, *lif_args,
                                 detach_reset, batch_stats)
    for name, g, w in zip(("gx", "ggamma", "gbeta"), got, want):
        assert_matches(g, w, what=name)


@pytest.mark.parametrize("detach_reset", [False, True], ids=["reset", "detached"])
@pytest.mark.parametrize("smooth", [False, True], ids=["spike", "smooth"])
def test_tdbn_lif_summed_over_time_forward_and_backward(rng, dtype, smooth, detach_reset):
    x, gamma, beta, _ = _fused_inputs(rng, dtype, 0.0, smooth, True)
    lif_args = (VTH, TAU, AA, 0.0, smooth)
    got = batchnorm.tdbn_lif_membrane_forward_train(x, gamma, beta, SCALE, EPS, *lif_args, 0.8)
    want = cpu.tdbn_lif_membrane_forward_train(x, gamma, beta, SCALE, EPS, *lif_args, 0.8)
    for name, g, w in zip(("sum", "mean", "var", "invstd"), got, want):
        assert_matches(g, w, what=name)
    g = rng.normal(size=FUSED_SHAPE[1:]).astype(dtype)
    got = batchnorm.tdbn_lif_membrane_backward(g, x, want[1], want[3], gamma, beta, SCALE,
                                               *lif_args, detach_reset, 0.8)
    expected = cpu.tdbn_lif_membrane_backward(g, x, want[1], want[3], gamma, beta, SCALE,
                                              *lif_args, detach_reset, 0.8)
    for name, a, b in zip(("gx", "ggamma", "gbeta"), got, expected):
        assert_matches(a, b, what=name)


# --------------------------------------------------------------------------------------------
# Where the results go
# --------------------------------------------------------------------------------------------


def test_host_inputs_give_host_outputs_and_device_inputs_device_outputs(rng):
    x = rng.normal(0.15, 0.5, (T, M))
    calls = {
        "lif_forward": (neuron.lif_forward, (x, VTH, TAU, AA, 0.0, True)),
        "lif_step": (neuron.lif_step, (x[0], np.zeros(M), np.zeros(M), VTH, TAU)),
        "psp_forward": (neuron.psp_forward, (x, 2.0)),
        "membrane_forward": (neuron.membrane_forward, (x, 0.8)),
        "tdbn_forward_train": (batchnorm.tdbn_forward_train,
                               (x.reshape(4, 14, 5), np.ones(14), np.zeros(14), SCALE, EPS)),
        "tdbn_lif_backward": (batchnorm.tdbn_lif_backward,
                              (x.reshape(T, 2, 7, 5), x.reshape(T, 2, 7, 5), np.zeros(7),
                               np.ones(7), np.ones(7), np.zeros(7), SCALE, VTH, TAU, AA, 0.0,
                               True, False, True)),
    }
    for name, (kernel, args) in calls.items():
        on_host = kernel(*args)
        on_device = kernel(*(launch.to_device(a) if isinstance(a, np.ndarray) else a
                             for a in args))
        on_host = on_host if isinstance(on_host, tuple) else (on_host,)
        on_device = on_device if isinstance(on_device, tuple) else (on_device,)
        for h, d in zip(on_host, on_device):
            assert isinstance(h, np.ndarray), f"{name}: host inputs, host outputs"
            assert launch.is_device_array(d), f"{name}: device inputs, device outputs"
            np.testing.assert_array_equal(d.copy_to_host(), h, err_msg=name)


def test_a_device_array_of_another_dtype_is_refused(rng):
    x = rng.normal(size=(T, M)).astype(np.float32)
    u = launch.to_device(np.zeros((T, M)))                # float64 on the device
    with pytest.raises(TypeError, match="float64"):
        neuron.lif_backward(x, u, u, TAU, AA, 0.0, False)
