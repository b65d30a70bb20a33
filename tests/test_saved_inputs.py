"""Weighted layers keep spike inputs for backward as bytes (``functional._saved``): the same
gradients, a quarter of the memory, and no extra pass when nothing needs a gradient."""
from __future__ import annotations

import numpy as np
import pytest

from snnvae import F, Tensor, backend, no_grad
from snnvae.functional import _saved
from snnvae.kernels import numpy_ref

LAYERS = {
    "linear": (lambda x, w: F.linear(x, w), (2, 3, 6), (4, 6),
               lambda g, x, w: numpy_ref.linear_backward(g.reshape(-1, 4), x.reshape(-1, 6), w,
                                                         False)[1]),
    "conv2d": (lambda x, w: F.conv2d(x, w, None, 2, 1), (2, 3, 2, 6, 6), (4, 2, 3, 3),
               lambda g, x, w: numpy_ref.conv2d_backward(g.reshape(-1, *g.shape[2:]),
                                                         x.reshape(-1, *x.shape[2:]), w, 2, 1,
                                                         False)[1]),
    "conv_transpose2d": (lambda x, w: F.conv_transpose2d(x, w, None, 2, 1, 1), (2, 3, 2, 3, 3),
                         (2, 4, 3, 3),
                         lambda g, x, w: numpy_ref.conv_transpose2d_backward(
                             g.reshape(-1, *g.shape[2:]), x.reshape(-1, *x.shape[2:]), w, 2, 1,
                             False)[1]),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", LAYERS)
def test_spike_inputs_are_kept_as_bytes_with_exact_gradients(name, dtype):
    layer, x_shape, w_shape, weight_grad = LAYERS[name]
    rng = np.random.default_rng(0)
    x = (rng.random(x_shape) < 0.3).astype(dtype)
    w = Tensor(rng.normal(size=w_shape).astype(dtype), requires_grad=True)
    y = layer(Tensor(x), w)
    kept = y._node.ctx.saved[0]
    assert kept.dtype == np.uint8 and kept.size == x.size
    g = rng.normal(size=y.shape).astype(dtype)
    y.backward(g)
    np.testing.assert_allclose(w.grad, weight_grad(g, x, w.data), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("start", ["real", "binary"])
@pytest.mark.parametrize("name", LAYERS)
def test_real_valued_inputs_are_kept_as_they_are(name, start, monkeypatch):
    """A real-valued input is recognised from its first values without a pass over it; one
    whose first values happen to be 0 or 1 is refused by the backend's full check."""
    layer, x_shape, w_shape, _ = LAYERS[name]
    rng = np.random.default_rng(1)
    x = rng.normal(size=x_shape)
    if start == "binary":
        x.reshape(-1)[:-1] = rng.random(x.size - 1) < 0.3      # only the last value is real
        monkeypatch.setattr(_saved, "_PROBE", 4)                # past the probe, as in a big x
    else:
        monkeypatch.setattr(backend.kernels(), "pack_spikes",
                            lambda a: pytest.fail("a pass over a real-valued input"))
    y = layer(Tensor(x), Tensor(rng.normal(size=w_shape), requires_grad=True))
    kept = y._node.ctx.saved[0]
    assert kept.dtype == np.float64
    np.testing.assert_array_equal(kept.reshape(x.shape), x)


@pytest.mark.parametrize("name", LAYERS)
def test_no_pass_over_the_input_without_gradients(name, monkeypatch):
    layer, x_shape, w_shape, _ = LAYERS[name]
    calls = []
    kernels = backend.kernels()
    original = kernels.pack_spikes
    monkeypatch.setattr(kernels, "pack_spikes", lambda a: calls.append(a.shape) or original(a))
    rng = np.random.default_rng(2)
    x = Tensor((rng.random(x_shape) < 0.3).astype(np.float32))
    w = Tensor(rng.normal(size=w_shape).astype(np.float32), requires_grad=True)
    with no_grad():
        layer(x, w)
    assert calls == []
    layer(x, w)
    assert len(calls) == 1


@pytest.mark.parametrize("name", LAYERS)
def test_frozen_weights_keep_the_input_unpacked_and_still_pass_input_gradients(name,
                                                                                monkeypatch):
    layer, x_shape, w_shape, _ = LAYERS[name]
    kernels = backend.kernels()
    monkeypatch.setattr(kernels, "pack_spikes", lambda a: pytest.fail("packed for no use"))
    rng = np.random.default_rng(3)
    x = Tensor((rng.random(x_shape) < 0.3).astype(np.float64), requires_grad=True)
    w = Tensor(rng.normal(size=w_shape))
    y = layer(x, w)
    y.backward(np.ones(y.shape))
    assert x.grad is not None and x.grad.shape == x.shape and w.grad is None
