"""Event-driven kernels (snnvae/kernels/event_driven.py) against the dense NumPy reference.

Binary inputs at firing rates 0, 0.05, 0.3 and 1, float32 and float64, with and without bias;
convolutions at strides 1 and 2, padding 0 and 1, with a non-square kernel and image so that a
swapped axis cannot pass. Non-binary inputs and mismatched shapes must be rejected.
"""
from __future__ import annotations

import numpy as np
import pytest

from snnvae.kernels import numpy_ref as ref
from snnvae.kernels.event_driven import (check_binary, event_conv2d_forward,
                                         event_linear_forward, firing_rate)

RATES = [0.0, 0.05, 0.3, 1.0]
DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-5, atol=1e-4), np.float64: dict(rtol=1e-12, atol=1e-12)}


def spikes(rng, shape, rate, dtype):
    return (rng.random(shape) < rate).astype(dtype)


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_linear_matches_dense(rate, dtype, bias):
    rng = np.random.default_rng(1)
    x = spikes(rng, (13, 37), rate, dtype)
    w = rng.normal(size=(11, 37)).astype(dtype)
    b = rng.normal(size=11).astype(dtype) if bias else None
    got, want = event_linear_forward(x, w, b), ref.linear_forward(x, w, b)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, **TOL[dtype])


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", [0, 1])
def test_conv2d_matches_dense(rate, dtype, bias, stride, padding):
    rng = np.random.default_rng(2)
    x = spikes(rng, (3, 4, 7, 6), rate, dtype)         # H != W
    w = rng.normal(size=(5, 4, 3, 2)).astype(dtype)    # kh != kw
    b = rng.normal(size=5).astype(dtype) if bias else None
    got = event_conv2d_forward(x, w, b, stride, padding)
    want = ref.conv2d_forward(x, w, b, stride, padding)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, **TOL[dtype])


def test_by_hand():
    """Spikes at inputs 0 and 2 add columns 0 and 2 of w; a lone spike in a conv stamps the
    kernel, flipped (the conv is a correlation), around its position."""
    w = np.arange(12.0).reshape(3, 4)
    y = event_linear_forward(np.array([[1.0, 0.0, 1.0, 0.0]]), w, np.array([0.5, 0.0, -1.0]))
    np.testing.assert_array_equal(y, [[0.0 + 2.0 + 0.5, 4.0 + 6.0, 8.0 + 10.0 - 1.0]])
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 1.0
    k = np.arange(9.0).reshape(1, 1, 3, 3)
    y = event_conv2d_forward(x, k, None, 1, 1)
    expected = np.zeros((5, 5))
    expected[1:4, 1:4] = k[0, 0, ::-1, ::-1]
    np.testing.assert_array_equal(y[0, 0], expected)


@pytest.mark.parametrize("spike_dtype", [np.uint8, np.bool_, np.float64])
def test_other_spike_dtypes(spike_dtype):
    """uint8 and bool spikes give the weights' dtype; float64 spikes promote float32 weights,
    as the dense matrix product does."""
    rng = np.random.default_rng(3)
    x = spikes(rng, (2, 3, 6, 6), 0.3, spike_dtype)
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    b = rng.normal(size=4).astype(np.float32)
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    want = ref.conv2d_forward(x64, w64, b64, 2, 1)
    got = event_conv2d_forward(x, w, b, 2, 1)
    assert got.dtype == np.result_type(x.dtype, w.dtype)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    xl = x.reshape(2, -1)
    wl = rng.normal(size=(5, xl.shape[1])).astype(np.float32)
    want = xl.astype(np.float64) @ wl.T.astype(np.float64)
    np.testing.assert_allclose(event_linear_forward(xl, wl, None), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", [0.5, 2.0, -1.0, np.nan])
def test_non_binary_rejected(bad):
    x = np.zeros((2, 3, 4, 4), dtype=np.float32)
    x[1, 2, 3, 1] = bad
    w = np.ones((2, 3, 3, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="binary"):
        event_conv2d_forward(x, w, None, 1, 1)
    with pytest.raises(ValueError, match="binary"):
        event_linear_forward(x.reshape(2, -1), np.ones((4, 48), np.float32), None)
    with pytest.raises(ValueError, match="1 of its 96 values"):
        check_binary(x)
    with pytest.raises(ValueError, match="binary"):
        firing_rate(x)


def test_mismatched_shapes_rejected():
    with pytest.raises(ValueError, match="do not fit"):
        event_linear_forward(np.ones((2, 5)), np.ones((3, 4)), None)
    with pytest.raises(ValueError, match="do not fit"):
        event_conv2d_forward(np.ones((1, 2, 4, 4)), np.ones((3, 1, 3, 3)), None, 1, 1)
    with pytest.raises(ValueError, match="bias"):
        event_linear_forward(np.ones((2, 4)), np.ones((3, 4)), np.ones(4))


def test_firing_rate():
    x = np.zeros((4, 10), dtype=np.uint8)
    x[0, :3] = 1
    x[2, 9] = 1
    assert firing_rate(x) == pytest.approx(4 / 40)
    assert firing_rate(np.ones((3, 3), dtype=bool)) == 1.0
    assert firing_rate(np.zeros((0, 5))) == 0.0
