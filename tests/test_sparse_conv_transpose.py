"""The event-driven (sparse-input) path of the Numba transposed convolution against the NumPy
reference, and the choice between it and the dense path."""
from __future__ import annotations

import numpy as np
import pytest

from snnvae.kernels import cpu, numpy_ref


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride,padding,output_padding", [(2, 1, 1), (1, 1, 0), (2, 0, 0)])
@pytest.mark.parametrize("path", ["sparse", "dense"])
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.7])
def test_both_paths_match_the_reference(monkeypatch, dtype, stride, padding, output_padding,
                                        path, rate):
    rng = np.random.default_rng(7)
    monkeypatch.setattr(cpu, "_SPARSE_RATE", 2.0 if path == "sparse" else -1.0)
    monkeypatch.setattr(cpu, "_SPARSE_MIN_OUT", 1)
    x = (rng.random((6, 3, 5, 4)) < rate).astype(dtype)
    x[0, 0, 0, 0] = 0.5 if rate else 0.0           # a non-spike value is handled too
    w = rng.normal(size=(3, 9, 3, 3)).astype(dtype)
    b = rng.normal(size=9).astype(dtype)
    for bias in (b, None):
        got = cpu.conv_transpose2d_forward(x, w, bias, stride, padding, output_padding)
        ref = numpy_ref.conv_transpose2d_forward(x, w, bias, stride, padding, output_padding)
        assert got.dtype == ref.dtype and got.shape == ref.shape
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)


def test_the_sparse_path_is_taken_for_sparse_inputs_only(monkeypatch):
    calls = []
    original = cpu._conv_transpose_sparse
    monkeypatch.setattr(cpu, "_conv_transpose_sparse",
                        lambda *a: calls.append(1) or original(*a))
    rng = np.random.default_rng(8)
    w = rng.normal(size=(4, 16, 3, 3)).astype(np.float32)
    for rate, expected in ((0.05, 1), (0.6, 0)):
        calls.clear()
        x = (rng.random((2, 4, 6, 6)) < rate).astype(np.float32)
        cpu.conv_transpose2d_forward(x, w, None, 2, 1, 1)
        assert len(calls) == expected, f"rate {rate}"
    calls.clear()       # one output channel: the dense path even for sparse inputs
    cpu.conv_transpose2d_forward(np.zeros((2, 4, 6, 6), np.float32), w[:, :1], None, 1, 1, 0)
    assert not calls
