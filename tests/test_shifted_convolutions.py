"""The stride-1 convolutions over shifted padded planes (``kernels.shifted``) against the NumPy
reference, forward and backward, for both kinds of layer; the rule that sends a layer there; and
a weight gradient that does not depend on the number of threads."""
from __future__ import annotations

import numba
import numpy as np
import pytest

from snnvae.kernels import cpu, numpy_ref, shifted

TOL = {np.float32: 3e-5, np.float64: 1e-12}
# (C_in, C_out, H, W, k, padding): k = 3 takes the fused three-tap pass, k = 2 the generic one
SHAPES = [(3, 1, 6, 5, 3, 1), (2, 4, 5, 7, 3, 0), (3, 2, 6, 5, 3, 2), (2, 3, 5, 4, 2, 1),
          (1, 3, 4, 6, 2, 0), (2, 2, 3, 4, 3, 2)]


def close(got, ref, dtype):
    assert got.dtype == ref.dtype and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=TOL[dtype], atol=TOL[dtype])


# Each kind of layer: (shifted forward, shifted backward, reference forward, reference
# backward), the reference ones with stride 1 (and output_padding 0) filled in.
KINDS = {
    "convolution": (shifted.conv2d_forward, shifted.conv2d_backward,
                    lambda x, w, b, pad: numpy_ref.conv2d_forward(x, w, b, 1, pad),
                    lambda gy, x, w, pad, hb: numpy_ref.conv2d_backward(gy, x, w, 1, pad, hb)),
    "transposed": (shifted.conv_transpose2d_forward, shifted.conv_transpose2d_backward,
                   lambda x, w, b, pad: numpy_ref.conv_transpose2d_forward(x, w, b, 1, pad, 0),
                   lambda gy, x, w, pad, hb: numpy_ref.conv_transpose2d_backward(gy, x, w, 1,
                                                                                 pad, hb)),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_the_shifted_kernels_match_the_reference(kind, dtype, shape):
    forward, backward, ref_forward, ref_backward = KINDS[kind]
    rng = np.random.default_rng(1)
    C_in, C_out, H, W, k, pad = shape
    x = rng.normal(size=(3, C_in, H, W)).astype(dtype)
    x[0, 0] = 0.0                               # a silent input map is handled too
    w_shape = (C_in, C_out, k, k) if kind == "transposed" else (C_out, C_in, k, k)
    w = rng.normal(size=w_shape).astype(dtype)
    b = rng.normal(size=C_out).astype(dtype)
    for bias in (b, None):
        close(forward(x, w, bias, pad), ref_forward(x, w, bias, pad), dtype)
    gy = rng.normal(size=ref_forward(x, w, b, pad).shape).astype(dtype)
    for g, r in zip(backward(gy, x, w, pad, True), ref_backward(gy, x, w, pad, True)):
        close(g, r, dtype)
    assert backward(gy, x, w, pad, False)[2] is None


def test_flip_and_swap_is_its_own_inverse():
    w = np.arange(2 * 3 * 3 * 3, dtype=np.float64).reshape(2, 3, 3, 3)
    once = shifted.flip_and_swap(w)
    assert once.shape == (3, 2, 3, 3) and once[1, 0, 0, 0] == w[0, 1, 2, 2]
    np.testing.assert_array_equal(shifted.flip_and_swap(once), w)


@pytest.mark.parametrize("k,stride,padding,expected", [
    (3, 1, 1, True), (3, 1, 0, True), (3, 1, 2, True), (3, 1, 3, False), (3, 2, 1, False),
    (2, 1, 1, True), (1, 1, 0, True)])
def test_which_settings_the_shifted_path_applies_to(k, stride, padding, expected):
    assert shifted.applies(k, k, stride, padding) == expected
    assert not shifted.applies(3, 2, 1, 1)        # non-square kernels keep the GEMM


def test_the_numba_backend_sends_only_few_channel_stride_1_layers_there(monkeypatch):
    calls = []
    for name in ("conv2d_forward", "conv2d_backward", "conv_transpose2d_forward",
                 "conv_transpose2d_backward"):
        original = getattr(shifted, name)
        monkeypatch.setattr(shifted, name,
                            lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))
    rng = np.random.default_rng(3)
    x = (rng.random((2, 16, 6, 6)) < 0.5).astype(np.float32)
    for c_out, stride, taken in ((1, 1, True), (8, 1, True), (9, 1, False), (1, 2, False)):
        calls.clear()
        w = rng.normal(size=(c_out, 16, 3, 3)).astype(np.float32)
        y = cpu.conv2d_forward(x, w, None, stride, 1)
        cpu.conv2d_backward(np.ones_like(y), x, w, stride, 1, False)
        wt = rng.normal(size=(16, c_out, 3, 3)).astype(np.float32)
        y = cpu.conv_transpose2d_forward(x, wt, None, stride, 1, stride - 1)
        cpu.conv_transpose2d_backward(np.ones_like(y), x, wt, stride, 1, False)
        assert len(calls) == (4 if taken else 0), (c_out, stride, calls)


def test_the_weight_gradient_does_not_depend_on_the_number_of_threads():
    rng = np.random.default_rng(4)
    x = (rng.random((37, 4, 9, 9)) < 0.2).astype(np.float32)
    gy = rng.normal(size=(37, 1, 9, 9)).astype(np.float32)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = shifted.weight_grad(gy, x, 3, 3, 1)
        numba.set_num_threads(threads)
        every = shifted.weight_grad(gy, x, 3, 3, 1)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(one, every)
    reference = numpy_ref.conv2d_backward(gy, x, np.zeros((1, 4, 3, 3), np.float32), 1, 1, False)
    np.testing.assert_allclose(one, reference[1], rtol=3e-5, atol=3e-5)
