"""A convolution whose time-first input is the same at every step (direct input coding: a
stride-0 time axis) runs once per image and repeats the result: the values and gradients of
the convolution of the materialised input, for T times less work."""
from __future__ import annotations

import numpy as np
import pytest

from snnvae import backend
from snnvae import functional as F
from snnvae.autograd import Tensor
from snnvae.models.config import FSVAEConfig
from snnvae.models.fsvae import FSVAE

TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def _conv_and_grads(x_array, w, b, R, needs_x_grad):
    x = Tensor(x_array, requires_grad=needs_x_grad)
    w.grad = b.grad = None
    y = F.conv2d(x, w, b, stride=2, padding=1)
    (y * Tensor(R)).sum().backward()
    return y.data, w.grad, b.grad, x.grad


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("needs_x_grad", [False, True], ids=["image", "x-needs-grad"])
@pytest.mark.parametrize("name", ["numpy", "cpu"])
def test_repeated_input_gives_the_values_and_gradients_of_the_materialised_one(
        dtype, needs_x_grad, name, monkeypatch):
    rng = np.random.default_rng(0)
    T, N = 5, 3
    x0 = rng.uniform(-1, 1, (N, 2, 9, 9)).astype(dtype)
    w = Tensor(rng.normal(size=(4, 2, 3, 3)).astype(dtype), requires_grad=True)
    b = Tensor(rng.normal(size=4).astype(dtype), requires_grad=True)
    R = rng.normal(size=(T, N, 4, 5, 5)).astype(dtype)
    repeated = np.broadcast_to(x0, (T, *x0.shape))
    assert repeated.strides[0] == 0
    with backend.use(name):
        want = _conv_and_grads(np.ascontiguousarray(repeated), w, b, R, needs_x_grad)
        batches = []
        kernels = backend.kernels()
        forward = kernels.conv2d_forward
        monkeypatch.setattr(kernels, "conv2d_forward",
                            lambda x, *a: batches.append(x.shape[0]) or forward(x, *a))
        got = _conv_and_grads(repeated, w, b, R, needs_x_grad)
    assert batches == [N]                    # one convolution of the N images, not T * N
    for what, a, c in zip(("y", "dL/dw", "dL/db", "dL/dx"), got, want):
        if c is None:
            assert a is None and not needs_x_grad, what
            continue
        assert a.shape == c.shape and a.dtype == c.dtype, what
        np.testing.assert_allclose(a, c, err_msg=what, **TOL[dtype])


def test_spiking_models_feed_the_image_as_a_repeated_view():
    config = FSVAEConfig(hidden_channels=(4, 8), latent_dim=6, k=3, timesteps=3, input_size=8)
    model = FSVAE(config, rng=np.random.default_rng(1))
    images = np.random.default_rng(2).uniform(-1, 1, (2, 1, 8, 8)).astype(np.float32)
    x = model.repeat_over_time(images)
    assert x.shape == (3, 2, 1, 8, 8) and x.data.strides[0] == 0
    np.testing.assert_array_equal(x.data[2], images)
    with pytest.raises(ValueError):          # read-only: nothing can write into the images
        x.data[0, 0, 0, 0, 0] = 1.0
