"""The event-driven (scatter) kernels against the NumPy reference: the transposed convolution of
the Numba backend on both of its paths, the scatter convolution behind
``event_driven.event_conv2d_forward``, on sparse and dense inputs, with spikes and with other
nonzero values; the reach table against its definition; and the choice between the scatter and
the dense path."""
from __future__ import annotations

import numpy as np
import pytest

from snnvae.kernels import cpu, numpy_ref, scatter

TOL = {np.float32: 2e-5, np.float64: 1e-12}
GEOMETRIES = [(2, 1, 1), (1, 1, 0), (2, 0, 0)]       # stride, padding, output_padding


def sparse_input(dtype, rate, rng):
    x = (rng.random((6, 3, 5, 4)) < rate).astype(dtype)
    x[0, 0, 0, 0] = 0.5 if rate else 0.0            # a value that is not a spike is handled too
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride,padding,output_padding", GEOMETRIES)
@pytest.mark.parametrize("path", ["scatter", "dense"])
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.7])
def test_both_transposed_convolution_paths_match_the_reference(monkeypatch, dtype, stride,
                                                               padding, output_padding, path,
                                                               rate):
    rng = np.random.default_rng(7)
    monkeypatch.setattr(cpu, "_SPARSE_RATE", 2.0 if path == "scatter" else -1.0)
    monkeypatch.setattr(cpu, "_SPARSE_MIN_OUT", 1)
    x = sparse_input(dtype, rate, rng)
    w = rng.normal(size=(3, 9, 3, 3)).astype(dtype)
    b = rng.normal(size=9).astype(dtype)
    for bias in (b, None):
        got = cpu.conv_transpose2d_forward(x, w, bias, stride, padding, output_padding)
        ref = numpy_ref.conv_transpose2d_forward(x, w, bias, stride, padding, output_padding)
        assert got.dtype == ref.dtype and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride,padding", [(2, 1), (1, 1), (2, 0), (3, 2)])
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.7])
def test_the_scatter_convolution_matches_the_reference(dtype, stride, padding, rate):
    rng = np.random.default_rng(9)
    x = sparse_input(dtype, rate, rng)
    w = rng.normal(size=(9, 3, 3, 3)).astype(dtype)
    b = rng.normal(size=9).astype(dtype)
    for bias in (b, None):
        got = scatter.conv2d_forward(x, w, bias, stride, padding)
        ref = numpy_ref.conv2d_forward(x, w, bias, stride, padding)
        assert got.dtype == ref.dtype and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("size,k,stride,pad,out", [(5, 3, 2, 1, 3), (4, 3, 1, 1, 4),
                                                   (4, 3, 2, 1, 8), (5, 2, 3, 0, 2)])
def test_reach_table_follows_its_definition(transposed, size, k, stride, pad, out):
    table = scatter.reach_table(size, k, stride, pad, out, transposed)
    for h in range(size):
        for p in range(k):
            if transposed:
                hits = [i for i in range(out) if i == h * stride - pad + p]
            else:
                hits = [i for i in range(out) if h == i * stride - pad + p]
            assert table[h, p] == (hits[0] if hits else -1), (h, p)


def test_the_scatter_path_is_taken_for_sparse_inputs_only(monkeypatch):
    calls = []
    original = scatter.conv_transpose2d_forward
    monkeypatch.setattr(scatter, "conv_transpose2d_forward",
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


def test_the_convolution_scatters_sparse_inputs_only(monkeypatch):
    """The encoder's convolutions on spikes walk the events; dense inputs, and layers with
    few output channels, take the dense path."""
    calls = []
    original = scatter.conv2d_forward
    monkeypatch.setattr(scatter, "conv2d_forward", lambda *a: calls.append(1) or original(*a))
    rng = np.random.default_rng(8)
    w = rng.normal(size=(16, 4, 3, 3)).astype(np.float32)
    for rate, expected in ((0.05, 1), (0.6, 0)):
        calls.clear()
        x = (rng.random((2, 4, 6, 6)) < rate).astype(np.float32)
        got = cpu.conv2d_forward(x, w, None, 2, 1)
        assert len(calls) == expected, f"rate {rate}"
        np.testing.assert_allclose(got, numpy_ref.conv2d_forward(x, w, None, 2, 1),
                                   rtol=2e-5, atol=2e-5)
    calls.clear()
    cpu.conv2d_forward(np.zeros((2, 4, 6, 6), np.float32), w[:4], None, 2, 1)
    assert not calls


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("size,k,stride,pad,out", [(5, 3, 2, 1, 3), (4, 3, 1, 1, 4),
                                                   (4, 3, 2, 1, 8), (5, 2, 3, 0, 2),
                                                   (7, 5, 2, 2, 4), (6, 4, 3, 1, 3)])
def test_column_runs_hold_the_reach_tables_pairs(transposed, size, k, stride, pad, out):
    """Each input column's run of ordered taps lands on consecutive output columns, and the
    runs together hold exactly the (tap, output column) pairs of the reach table."""
    order, j0, q0, n = scatter.column_runs(size, k, stride, pad, out, transposed)
    assert sorted(order) == list(range(k))
    table = scatter.reach_table(size, k, stride, pad, out, transposed)
    for v in range(size):
        from_runs = {(int(order[q0[v] + m]), int(j0[v] + m)) for m in range(n[v])}
        from_table = {(q, int(table[v, q])) for q in range(k) if table[v, q] >= 0}
        assert from_runs == from_table, v
        assert n[v] == 0 or (0 <= j0[v] and j0[v] + n[v] <= out and q0[v] + n[v] <= k)


def test_the_estimated_nonzero_fraction_reads_evenly_spaced_images():
    x = np.zeros((10, 3, 4), np.float32)
    x[::3] = 1.0                                    # images 0, 3, 6, 9 are all ones
    assert scatter.nonzero_fraction(x) == pytest.approx(0.4)
    assert scatter.nonzero_fraction(x, max_values=12 * 4) == 1.0     # images 0, 3, 6, 9
    assert scatter.nonzero_fraction(x, max_values=12 * 5) == pytest.approx(0.4)  # 0, 2, 4, ..
    assert scatter.nonzero_fraction(x[:1], max_values=1) == 1.0
    assert scatter.nonzero_fraction(np.zeros((0, 3)), max_values=5) == 0.0
