"""Finite-difference tests of every spiking layer (float64, central differences).

Spiking layers run in the smooth stand-in mode, whose exact derivative is the surrogate, so
BPTT, tdBN, the convolutions and the losses are checked end to end. ``check_spiking_backward``
then shows that real spikes get exactly the straight-through derivative of the stand-in.
Each test runs on both kernel backends.
"""
from __future__ import annotations

import numpy as np
import pytest

from snnvae import F, Tensor, nn
from snnvae.functional import LIFParams
from snnvae.gradcheck import check_spiking_backward, grad_check


def check(fn, inputs, names=None, spike="smooth", **kw):
    results = grad_check(fn, inputs, names, spike=spike, **kw)
    assert all(r.passed for r in results), "\n".join(map(str, results))


def weighted_sum(out, rng):
    R = Tensor(rng.normal(size=out.shape))
    return (out * R).sum()


def test_linear(backend_name):
    rng = np.random.default_rng(10)
    layer = nn.Linear(5, 3, rng=rng, dtype=np.float64)
    x = Tensor(rng.normal(size=(4, 2, 5)), requires_grad=True)
    R = Tensor(rng.normal(size=(4, 2, 3)))
    check(lambda: (layer(x) * R).sum(), [x, layer.weight, layer.bias], spike="spike")


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1), (2, 0)])
def test_conv2d(backend_name, stride, padding):
    rng = np.random.default_rng(11)
    layer = nn.Conv2d(2, 3, 3, stride=stride, padding=padding, rng=rng, dtype=np.float64)
    x = Tensor(rng.normal(size=(3, 2, 2, 7, 6)), requires_grad=True)   # (T, N, C, H, W)
    R = Tensor(rng.normal(size=layer(Tensor(x.data)).shape))
    check(lambda: (layer(x) * R).sum(), [x, layer.weight, layer.bias], spike="spike")


@pytest.mark.parametrize("stride,padding,output_padding", [(2, 1, 1), (1, 1, 0), (2, 0, 1)])
def test_conv_transpose2d(backend_name, stride, padding, output_padding):
    rng = np.random.default_rng(12)
    layer = nn.ConvTranspose2d(3, 2, 3, stride=stride, padding=padding,
                               output_padding=output_padding, rng=rng, dtype=np.float64)
    x = Tensor(rng.normal(size=(3, 2, 3, 4, 5)), requires_grad=True)
    out = layer(Tensor(x.data))
    expected_h = (4 - 1) * stride - 2 * padding + 3 + output_padding
    assert out.shape == (3, 2, 2, expected_h, (5 - 1) * stride - 2 * padding + 3 + output_padding)
    R = Tensor(rng.normal(size=out.shape))
    check(lambda: (layer(x) * R).sum(), [x, layer.weight, layer.bias], spike="spike")


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_td_batch_norm(backend_name, training, alpha):
    rng = np.random.default_rng(13)
    bn = nn.TdBatchNorm(3, alpha=alpha, dtype=np.float64)
    bn.weight.data = rng.uniform(0.5, 1.5, 3)
    bn.bias.data = rng.normal(size=3) * 0.1
    bn.running_mean[:] = rng.normal(size=3)
    bn.running_var[:] = rng.uniform(0.5, 2, 3)
    bn.train(training)
    x = Tensor(rng.normal(size=(4, 2, 3, 3, 2)) * 2 + 1, requires_grad=True)
    R = Tensor(rng.normal(size=x.shape))
    stats = bn.running_mean.copy(), bn.running_var.copy()

    def fn():
        # finite differences must not drift the running statistics
        bn.running_mean[:], bn.running_var[:] = stats
        return (bn(x) * R).sum()

    check(fn, [x, bn.weight, bn.bias], spike="spike")


@pytest.mark.parametrize("center", [0.0, 0.2])
@pytest.mark.parametrize("detach_reset", [False, True])
def test_lif_bptt_with_spikes_and_resets(backend_name, center, detach_reset):
    rng = np.random.default_rng(14)
    T = 6
    x = Tensor(rng.uniform(-0.3, 0.9, size=(T, 3, 4)), requires_grad=True)
    opts = dict(window_center=center, detach_reset=detach_reset)
    spikes = F.lif(Tensor(x.data), mode="spike", **opts).data
    # the regime under test really happens: spikes, resets after spikes, and silent steps
    assert 0.2 < spikes.mean() < 0.8
    assert (spikes[:-1] * spikes[1:]).sum() > 0 and ((1 - spikes[:-1]) * spikes[1:]).sum() > 0
    smooth_out = F.lif(Tensor(x.data), mode="smooth", **opts).data
    assert ((smooth_out > 0) & (smooth_out < 1)).mean() > 0.3   # stand-in is in its linear part
    R = Tensor(rng.normal(size=x.shape))
    if not detach_reset:
        check(lambda: (F.lif(x, **opts) * R).sum(), [x])
    else:
        # a stop-gradient has no finite difference: compare the fused smooth-mode backward
        # with autograd through the unrolled stand-in graph, which detaches the reset itself
        p = LIFParams(window_center=center, detach_reset=True)
        x_ref = Tensor(x.data, requires_grad=True)
        (F.lif_unrolled(x_ref, p, spike_fn=lambda u: F.smooth_spike(u, p))[0] * R).sum().backward()
        x.grad = None
        (F.lif(x, mode="smooth", **opts) * R).sum().backward()
        np.testing.assert_allclose(x.grad, x_ref.grad, rtol=1e-12, atol=1e-14)
    results = check_spiking_backward(lambda: (F.lif(x, **opts) * R).sum(), [x])
    assert all(r.passed for r in results), "\n".join(map(str, results))


def test_lif_reset_gradient_changes_bptt():
    """Keeping or detaching the reset path gives different gradients when spikes fire."""
    rng = np.random.default_rng(15)
    x = rng.uniform(0.0, 0.8, size=(6, 10))
    grads = []
    for detach in (False, True):
        xt = Tensor(x, requires_grad=True)
        F.lif(xt, detach_reset=detach).sum().backward()
        grads.append(xt.grad)
    assert not np.allclose(*grads)


def test_unrolled_lif_equals_fused_forward():
    rng = np.random.default_rng(16)
    x = rng.uniform(-0.3, 0.9, size=(8, 5))
    o, u = F.lif_unrolled(Tensor(x), LIFParams())
    np.testing.assert_array_equal(o.data, F.lif(Tensor(x)).data)


def test_psp_and_membrane_output(backend_name):
    rng = np.random.default_rng(17)
    x = Tensor(rng.uniform(size=(7, 3, 2)), requires_grad=True)
    R = Tensor(rng.normal(size=x.shape))
    check(lambda: (F.psp(x) * R).sum(), [x], spike="spike")
    R2 = Tensor(rng.normal(size=(3, 2)))
    check(lambda: (F.tanh(F.membrane_output(x)) * R2).sum(), [x], spike="spike")


def test_mse_loss():
    rng = np.random.default_rng(18)
    a = Tensor(rng.normal(size=(3, 4)), requires_grad=True)
    b = Tensor(rng.normal(size=(3, 4)), requires_grad=True)
    check(lambda: F.mse_loss(a, b), [a, b], spike="spike")
    np.testing.assert_allclose(F.mse_loss(a, b).item(), np.mean((a.data - b.data) ** 2))


def test_small_spiking_network_end_to_end(backend_name):
    """conv -> tdBN -> LIF -> transposed conv -> tdBN -> LIF -> conv-transpose -> membrane -> tanh
    -> MSE, every parameter checked through the smooth stand-in (BPTT over T = 4)."""
    rng = np.random.default_rng(19)
    net = nn.Sequential(
        nn.SpikingConv2d(1, 3, 3, stride=2, padding=1, rng=rng, dtype=np.float64),
        nn.SpikingConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1, rng=rng,
                                  dtype=np.float64),
        nn.ConvTranspose2d(2, 1, 3, stride=1, padding=1, rng=rng, dtype=np.float64),
        nn.MembraneOutput(), nn.Tanh())
    image = rng.uniform(-1, 1, size=(2, 1, 6, 6))
    x = Tensor(np.broadcast_to(image, (4, 2, 1, 6, 6)).copy())      # direct input over T = 4
    target = Tensor(image)
    params = net.parameters()
    names = [n for n, _ in net.named_parameters()]
    check(lambda: F.mse_loss(net(x), target), params, names, samples=12,
          rng=np.random.default_rng(0))
    results = check_spiking_backward(lambda: F.mse_loss(net(x), target), params, names)
    assert all(r.passed for r in results), "\n".join(map(str, results))
