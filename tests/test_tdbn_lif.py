"""The fused tdBN -> LIF operation: the same values and gradients as the two operations it
replaces, finite differences through the smooth stand-in, and the Numba kernels against the
NumPy reference."""
from __future__ import annotations

import numpy as np
import pytest

from snnvae import F, Tensor, backend, nn
from snnvae.functional import LIFParams
from snnvae.gradcheck import check_spiking_backward, grad_check
from snnvae.kernels import cpu, numpy_ref


def _bn_setup(rng, C, dtype):
    gamma = rng.uniform(0.5, 2.0, C).astype(dtype)
    beta = (rng.normal(size=C) * 0.1).astype(dtype)
    running_mean = (rng.normal(size=C) * 0.3).astype(dtype)
    running_var = rng.uniform(0.5, 2.0, C).astype(dtype)
    return gamma, beta, running_mean, running_var


def _both_ways(x, gamma, beta, rm, rv, training, params, smooth, g):
    """(outputs, grads, running stats) of the fused op and of tdBN then LIF."""
    def fused(xt, gt, bt, m, v):
        return F.td_batch_norm_lif(xt, gt, bt, m, v, training=training, scale=0.4,
                                   lif_params=params, smooth=smooth)

    def separate(xt, gt, bt, m, v):
        y = F.batch_norm(xt, gt, bt, m, v, training=training, channel_axis=2, scale=0.4)
        return F.lif(y, params.vth, params.tau, params.aa, params.window_center,
                     params.detach_reset, mode="smooth" if smooth else "spike")
    return _run_each((fused, separate), x, gamma, beta, rm, rv, g)


def _run_each(ops, x, gamma, beta, rm, rv, g):
    """For each op(x, gamma, beta, running_mean, running_var) on fresh copies: (output, the
    gradients of sum(output * g) for x, gamma and beta, the running statistics)."""
    results = []
    for op in ops:
        xt = Tensor(x.copy(), requires_grad=True)
        gt, bt = Tensor(gamma.copy(), requires_grad=True), Tensor(beta.copy(), requires_grad=True)
        m, v = rm.copy(), rv.copy()
        o = op(xt, gt, bt, m, v)
        (o * Tensor(g)).sum().backward()
        results.append((o.data, xt.grad, gt.grad, bt.grad, m, v))
    return results


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("smooth", [False, True])
@pytest.mark.parametrize("center,detach_reset", [(0.0, False), (0.2, True)])
@pytest.mark.parametrize("shape", [(5, 3, 4, 6, 6), (6, 4, 37)])
def test_fused_equals_tdbn_then_lif(backend_name, dtype, training, smooth, center, detach_reset,
                                    shape):
    rng = np.random.default_rng(1)
    gamma, beta, rm, rv = _bn_setup(rng, shape[2], dtype)
    x = (rng.normal(size=shape) * 1.5 + 0.3).astype(dtype)
    g = rng.normal(size=shape).astype(dtype)
    params = LIFParams(window_center=center, detach_reset=detach_reset)
    fused, separate = _both_ways(x, gamma, beta, rm, rv, training, params, smooth, g)
    spikes = fused[0]
    assert 0.05 < spikes.mean() < 0.95            # neurons fire and stay silent
    np.testing.assert_array_equal(spikes, separate[0])
    for a, b in zip(fused[4:], separate[4:]):      # running statistics
        np.testing.assert_array_equal(a, b)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-12)
    for name, a, b in zip(("x", "gamma", "beta"), fused[1:4], separate[1:4]):
        scale = np.abs(b).max()
        np.testing.assert_allclose(a / scale, b / scale, err_msg=name, **tol)


@pytest.mark.parametrize("training", [True, False])
def test_finite_differences_through_the_stand_in(backend_name, training):
    rng = np.random.default_rng(2)
    C = 3
    gamma, beta, rm, rv = _bn_setup(rng, C, np.float64)
    gamma_t, beta_t = Tensor(gamma, requires_grad=True), Tensor(beta, requires_grad=True)
    x = Tensor(rng.normal(size=(6, 2, C, 5)) + 0.5, requires_grad=True)
    R = Tensor(rng.normal(size=x.shape))
    params = LIFParams()

    def fn():
        m, v = rm.copy(), rv.copy()
        return (F.td_batch_norm_lif(x, gamma_t, beta_t, m, v, training=training, scale=0.4,
                                    lif_params=params, smooth=True) * R).sum()

    out = F.td_batch_norm_lif(x, gamma_t, beta_t, rm.copy(), rv.copy(), training=training,
                              scale=0.4, lif_params=params, smooth=True).data
    assert ((out > 0) & (out < 1)).mean() > 0.3    # the stand-in is in its linear part
    results = grad_check(fn, [x, gamma_t, beta_t], ["x", "gamma", "beta"], spike="spike")
    assert all(r.passed for r in results), "\n".join(map(str, results))


def test_spiking_block_backward_is_the_straight_through_derivative(backend_name):
    """Spike mode runs the fused kernel; straight-through mode runs tdBN and the unrolled LIF
    in autograd primitives: the gradients must agree."""
    rng = np.random.default_rng(3)
    block = nn.SpikingConv2d(2, 4, 3, stride=2, padding=1, rng=rng, dtype=np.float64)
    x = Tensor((rng.random((5, 3, 2, 6, 6)) < 0.5).astype(np.float64))
    R = Tensor(rng.normal(size=(5, 3, 4, 3, 3)))
    params = [block.weight, block.bias, block.bn.weight, block.bn.bias]
    results = check_spiking_backward(lambda: (block(x) * R).sum(), params)
    assert all(r.passed for r in results), "\n".join(map(str, results))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4, 3, 5, 1), (3, 2, 3, 100), (2, 5, 2, 1500)])
@pytest.mark.parametrize("batch_stats", [True, False])
def test_numba_kernels_match_the_reference(dtype, shape, batch_stats):
    """Shapes cover one neuron per row (linear layers), several rows per block, and rows longer
    than a block."""
    rng = np.random.default_rng(4)
    C = shape[2]
    gamma, beta, rm, rv = _bn_setup(rng, C, dtype)
    x = (rng.normal(size=shape) + 0.5).astype(dtype)
    go = rng.normal(size=shape).astype(dtype)
    lif = (0.2, 0.25, 0.5, 0.0, False)
    outs = {}
    for name, k in (("numpy", numpy_ref), ("cpu", cpu)):
        if batch_stats:
            o, mean, var, invstd = k.tdbn_lif_forward_train(x, gamma, beta, 0.2, 1e-5, *lif)
        else:
            o, mean, invstd = k.tdbn_lif_forward_eval(x, gamma, beta, 0.2, rm, rv, 1e-5, *lif)
        grads = k.tdbn_lif_backward(go, x, mean, invstd, gamma, beta, 0.2, *lif, False,
                                    batch_stats)
        outs[name] = (o, mean, invstd, *grads)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    ref, got = outs["numpy"], outs["cpu"]
    assert 0.05 < ref[0].mean() < 0.95
    # float32 batch statistics are summed in another order (float64 partial sums here), so
    # a membrane potential within rounding of Vth may flip: allow a handful of such neurons
    flips = np.mean(ref[0] != got[0])
    assert flips == 0 if dtype == np.float64 or not batch_stats else flips < 1e-3
    for name, a, b in zip(("mean", "invstd", "gx", "gamma", "beta"), got[1:], ref[1:]):
        if flips:
            continue
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max(), err_msg=name)


def test_bad_shapes_are_named():
    x = Tensor(np.zeros((2, 3, 4), dtype=np.float32))
    gamma = np.ones(5, dtype=np.float32)
    with pytest.raises(ValueError, match="must be \\(T, N, C, ...\\)"):
        F.td_batch_norm_lif(x, gamma, gamma, gamma.copy(), gamma.copy(), training=True)


def test_the_fused_block_is_what_spiking_layers_run_and_unfused_blocks_switches_it_off():
    rng = np.random.default_rng(5)
    block = nn.SpikingLinear(6, 8, rng=rng)
    x = Tensor(rng.random((4, 3, 6)).astype(np.float32), requires_grad=True)
    fused = block(x)
    with nn.unfused_blocks():
        separate = block(x)
    assert type(fused._node.ctx).__name__ == "Context" and fused._node.fn.__name__ == "TdBNLIF"
    assert separate._node.fn.__name__ == "LIF"
    np.testing.assert_array_equal(fused.data, separate.data)
    with backend.use("numpy"):
        np.testing.assert_array_equal(block(x).data, fused.data)


# --------------------------------------------------------------------------------------------
# tdBN -> LIF -> weighted sum over time (the read-out's last block in training)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("smooth", [False, True])
@pytest.mark.parametrize("detach_reset", [False, True])
def test_summed_block_equals_the_spikes_then_the_membrane_output(backend_name, dtype, smooth,
                                                                 detach_reset):
    """F.td_batch_norm_lif_membrane == membrane_output(td_batch_norm_lif(training)): the sum,
    every gradient and the running statistics."""
    rng = np.random.default_rng(5)
    shape = (5, 3, 4, 6, 6)
    gamma, beta, rm, rv = _bn_setup(rng, shape[2], dtype)
    x = (rng.normal(size=shape) * 1.5 + 0.3).astype(dtype)
    g = rng.normal(size=shape[1:]).astype(dtype)
    params = LIFParams(detach_reset=detach_reset)
    def summed(xt, gt, bt, m, v):
        return F.td_batch_norm_lif_membrane(xt, gt, bt, m, v, scale=0.4, lif_params=params,
                                            smooth=smooth, decay=0.7)

    def spikes_then_sum(xt, gt, bt, m, v):
        return F.membrane_output(F.td_batch_norm_lif(xt, gt, bt, m, v, training=True, scale=0.4,
                                                     lif_params=params, smooth=smooth), 0.7)
    results = _run_each((summed, spikes_then_sum), x, gamma, beta, rm, rv, g)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-12)
    assert results[0][0].shape == shape[1:] and np.ptp(results[0][0]) > 0.5
    for name, a, b in zip(("sum", "x", "gamma", "beta", "running mean", "running var"),
                          *results):
        scale = max(np.abs(b).max(), 1e-30)
        np.testing.assert_allclose(a / scale, b / scale, err_msg=name, **tol)


def test_summed_block_by_finite_differences(backend_name):
    rng = np.random.default_rng(6)
    C = 3
    gamma, beta, rm, rv = _bn_setup(rng, C, np.float64)
    gamma_t, beta_t = Tensor(gamma, requires_grad=True), Tensor(beta, requires_grad=True)
    x = Tensor(rng.normal(size=(6, 2, C, 5)) + 0.5, requires_grad=True)
    R = Tensor(rng.normal(size=(2, C, 5)))

    def fn():
        return (F.td_batch_norm_lif_membrane(x, gamma_t, beta_t, rm.copy(), rv.copy(), scale=0.4,
                                             smooth=True, decay=0.8) * R).sum()

    results = grad_check(fn, [x, gamma_t, beta_t], ["x", "gamma", "beta"], spike="spike")
    assert all(r.passed for r in results), "\n".join(map(str, results))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4, 3, 5, 1), (3, 2, 3, 100), (2, 5, 2, 1500)])
def test_summed_block_kernels_match_the_reference(dtype, shape):
    rng = np.random.default_rng(7)
    gamma, beta, _, _ = _bn_setup(rng, shape[2], dtype)
    x = (rng.normal(size=shape) + 0.5).astype(dtype)
    g = rng.normal(size=shape[1:]).astype(dtype)
    lif = (0.2, 0.25, 0.5, 0.0, False)
    outs = {}
    for name, k in (("numpy", numpy_ref), ("cpu", cpu)):
        summed, mean, var, invstd = k.tdbn_lif_membrane_forward_train(x, gamma, beta, 0.2, 1e-5,
                                                                      *lif, 0.8)
        grads = k.tdbn_lif_membrane_backward(g, x, mean, invstd, gamma, beta, 0.2, *lif, False,
                                             0.8)
        outs[name] = (summed, mean, var, invstd, *grads)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for name, a, b in zip(("sum", "mean", "var", "invstd", "gx", "gamma", "beta"),
                          outs["cpu"], outs["numpy"]):
        assert a.dtype == b.dtype == dtype, name
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max(), err_msg=name)
    assert np.ptp(outs["numpy"][0]) > 0


def test_summed_block_needs_training_mode():
    bn = nn.TdBatchNorm(3).eval()
    with pytest.raises(RuntimeError, match="training mode"):
        bn.forward_then_lif_summed(Tensor(np.zeros((2, 1, 3, 4))), nn.LIF(), 0.8)
