"""The dense convolutions' chunk workers (``kernels.gemm_conv``) and the BLAS thread control
(``kernels.blas_threads``): the same results as one chunk after the other, independent of which
worker took which chunk, and OpenBLAS's threads given back afterwards, errors included."""
from __future__ import annotations

import numba
import numpy as np
import pytest

from snnvae.kernels import blas_threads, gemm_conv, numpy_ref

needs_workers = pytest.mark.skipif(
    not blas_threads.available() or numba.get_num_threads() < 2,
    reason="the chunk workers need two Numba threads and OpenBLAS's thread control")


def _layer(rng, transposed, dtype=np.float64, B=9):
    """A stride-2 layer on spikes with its upstream gradient: (x, w, gy)."""
    if transposed:
        x = (rng.random((B, 3, 4, 5)) < 0.3).astype(dtype)
        w = rng.normal(size=(3, 4, 3, 3)).astype(dtype)
        gy = rng.normal(size=(B, 4, 8, 10)).astype(dtype)
    else:
        x = (rng.random((B, 3, 8, 10)) < 0.3).astype(dtype)
        w = rng.normal(size=(4, 3, 3, 3)).astype(dtype)
        gy = rng.normal(size=(B, 4, 4, 5)).astype(dtype)
    return x, w, gy


def _run(transposed, x, w, gy):
    if transposed:
        return (gemm_conv.conv_transpose2d_forward(x, w, None, 2, 1, 1),
                *gemm_conv.conv_transpose2d_backward(gy, x, w, 2, 1, True))
    return (gemm_conv.conv2d_forward(x, w, None, 2, 1),
            *gemm_conv.conv2d_backward(gy, x, w, 2, 1, True))


@needs_workers
@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "conv_transpose"])
def test_workers_give_the_results_of_one_chunk_after_the_other(transposed, monkeypatch):
    monkeypatch.setattr(gemm_conv, "_CHUNK_ELEMENTS", 1)          # one image per chunk
    x, w, gy = _layer(np.random.default_rng(1), transposed)
    chunks = []
    original = gemm_conv.im2col

    def noted(*args):
        chunks.append(args[-1])                                   # serial: in a worker
        return original(*args)
    monkeypatch.setattr(gemm_conv, "im2col", noted)
    with_workers = _run(transposed, x, w, gy)
    again = _run(transposed, x, w, gy)
    assert chunks and all(chunks), "every chunk should have run in a worker"
    monkeypatch.setattr(gemm_conv, "_WORKERS", False)
    chunks.clear()
    sequential = _run(transposed, x, w, gy)
    assert chunks and not any(chunks)
    reference = ((numpy_ref.conv_transpose2d_forward(x, w, None, 2, 1, 1),
                  *numpy_ref.conv_transpose2d_backward(gy, x, w, 2, 1, True)) if transposed else
                 (numpy_ref.conv2d_forward(x, w, None, 2, 1),
                  *numpy_ref.conv2d_backward(gy, x, w, 2, 1, True)))
    for got, twice, seq, want in zip(with_workers, again, sequential, reference):
        np.testing.assert_array_equal(got, twice)     # no dependence on who took which chunk
        np.testing.assert_allclose(got, seq, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)


@needs_workers
def test_blas_threads_are_one_inside_and_given_back_after_an_error(monkeypatch):
    before = blas_threads.count()
    with blas_threads.single_threaded() as changed:
        assert changed and blas_threads.count() == 1
    assert blas_threads.count() == before
    monkeypatch.setattr(gemm_conv, "_CHUNK_ELEMENTS", 1)

    def failing(*args):
        raise RuntimeError("a chunk failed")
    monkeypatch.setattr(gemm_conv, "im2col", failing)
    x, w, gy = _layer(np.random.default_rng(2), False)
    with pytest.raises(RuntimeError, match="a chunk failed"):
        gemm_conv.conv2d_forward(x, w, None, 2, 1)
    assert blas_threads.count() == before


def test_without_thread_control_the_chunks_run_one_after_the_other(monkeypatch):
    monkeypatch.setattr(blas_threads, "_controls", lambda: None)
    assert not blas_threads.available() and blas_threads.count() is None
    with blas_threads.single_threaded() as changed:
        assert not changed
    monkeypatch.setattr(gemm_conv, "_CHUNK_ELEMENTS", 1)
    x, w, gy = _layer(np.random.default_rng(3), True)
    got = _run(True, x, w, gy)
    want = (numpy_ref.conv_transpose2d_forward(x, w, None, 2, 1, 1),
            *numpy_ref.conv_transpose2d_backward(gy, x, w, 2, 1, True))
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("size, k, stride, pad", [(7, 3, 2, 1), (8, 3, 1, 1), (4, 3, 1, 2)])
def test_serial_gathers_equal_the_parallel_ones(size, k, stride, pad):
    """The serial im2col / col2im that the workers run write what the parallel ones write."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, size, size))
    out = (size + 2 * pad - k) // stride + 1
    offsets = gemm_conv._tap_offsets(size, size, k, k, stride, pad, out, out)
    cols = [np.full((3 * k * k, 2 * out * out), np.nan) for _ in range(2)]
    gemm_conv._im2col(x, cols[0], offsets)
    gemm_conv._im2col_serial(x, cols[1], offsets)
    np.testing.assert_array_equal(cols[0], cols[1])
    c = rng.standard_normal(cols[0].shape)
    back = [np.full(x.shape, np.nan) for _ in range(2)]
    gemm_conv._col2im(c, back[0], np.arange(3.0), offsets)
    gemm_conv._col2im_serial(c, back[1], np.arange(3.0), offsets)
    np.testing.assert_array_equal(back[0], back[1])
    assert not np.isnan(back[1]).any()
