"""The Numba CPU kernels against the NumPy reference on random shapes and both float dtypes."""
from __future__ import annotations

import numpy as np
import pytest

from snnvae import backend
from snnvae.kernels import cpu, gemm_conv, numpy_ref

TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-11, atol=1e-12)}
DTYPES = [np.float32, np.float64]


def close(a, b, dtype):
    if a is None or b is None:
        assert a is None and b is None
        return
    assert a.dtype == b.dtype == dtype, (a.dtype, b.dtype)
    np.testing.assert_allclose(a, b, **TOL[dtype])


def test_both_backends_expose_identical_kernels():
    for name in backend.KERNEL_NAMES:
        assert callable(getattr(numpy_ref, name)) and callable(getattr(cpu, name)), name


@pytest.fixture(params=["one chunk", "one image per chunk", "one image per chunk, no workers",
                        "no shifted path"])
def conv_chunking(request, monkeypatch):
    """The Numba convolutions work on chunks of images; also check them with many chunks (taken
    by worker threads, or one after the other), and with the GEMM path for the stride-1 layers
    with few channels that ``shifted`` would take."""
    if request.param.startswith("one image per chunk"):
        monkeypatch.setattr(gemm_conv, "_CHUNK_ELEMENTS", 1)
    if request.param.endswith("no workers"):
        monkeypatch.setattr(gemm_conv, "_WORKERS", False)
    if request.param == "no shifted path":
        monkeypatch.setattr(cpu, "_SHIFTED_MAX_CHANNELS", 0)
    return request.param


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(3))
def test_conv_kernels(dtype, seed, conv_chunking):
    rng = np.random.default_rng(seed)
    B, Ci, Co = rng.integers(1, 5), rng.integers(1, 4), rng.integers(1, 5)
    H, W, k = rng.integers(4, 9), rng.integers(4, 9), int(rng.choice([1, 3]))
    stride, pad = int(rng.integers(1, 3)), int(rng.integers(0, 2))
    x = (rng.random((B, Ci, H, W)) < 0.3).astype(dtype)
    w = rng.normal(size=(Co, Ci, k, k)).astype(dtype)
    b = rng.normal(size=Co).astype(dtype)
    y_ref = numpy_ref.conv2d_forward(x, w, b, stride, pad)
    close(cpu.conv2d_forward(x, w, b, stride, pad), y_ref, dtype)
    gy = rng.normal(size=y_ref.shape).astype(dtype)
    for a, r in zip(cpu.conv2d_backward(gy, x, w, stride, pad, True),
                    numpy_ref.conv2d_backward(gy, x, w, stride, pad, True)):
        close(a, r, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(3))
def test_conv_transpose_kernels(dtype, seed, conv_chunking):
    rng = np.random.default_rng(10 + seed)
    B, Ci, Co = rng.integers(1, 5), rng.integers(1, 4), rng.integers(1, 5)
    H, W = rng.integers(2, 6), rng.integers(2, 6)
    stride, pad = int(rng.integers(1, 3)), int(rng.integers(0, 2))
    op = int(rng.integers(0, stride))
    x = (rng.random((B, Ci, H, W)) < 0.3).astype(dtype)
    w = rng.normal(size=(Ci, Co, 3, 3)).astype(dtype)
    b = rng.normal(size=Co).astype(dtype)
    y_ref = numpy_ref.conv_transpose2d_forward(x, w, b, stride, pad, op)
    close(cpu.conv_transpose2d_forward(x, w, b, stride, pad, op), y_ref, dtype)
    gy = rng.normal(size=y_ref.shape).astype(dtype)
    for a, r in zip(cpu.conv_transpose2d_backward(gy, x, w, stride, pad, True),
                    numpy_ref.conv_transpose2d_backward(gy, x, w, stride, pad, True)):
        close(a, r, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_kernels(dtype):
    rng = np.random.default_rng(20)
    x, w, b = (rng.normal(size=s).astype(dtype) for s in [(7, 5), (3, 5), (3,)])
    close(cpu.linear_forward(x, w, b), numpy_ref.linear_forward(x, w, b), dtype)
    gy = rng.normal(size=(7, 3)).astype(dtype)
    for a, r in zip(cpu.linear_backward(gy, x, w, True), numpy_ref.linear_backward(gy, x, w, True)):
        close(a, r, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 3, 7), (12, 2, 1), (3, 300, 2), (40, 3, 5)])
def test_tdbn_kernels(dtype, shape):
    rng = np.random.default_rng(21)
    C = shape[1]
    x = (rng.normal(size=shape) * 3 + 1).astype(dtype)
    gamma, beta = rng.uniform(0.5, 1.5, C).astype(dtype), rng.normal(size=C).astype(dtype)
    ref = numpy_ref.tdbn_forward_train(x, gamma, beta, 0.4, 1e-5)
    for a, r in zip(cpu.tdbn_forward_train(x, gamma, beta, 0.4, 1e-5), ref):
        close(a, r, dtype)
    gy = rng.normal(size=shape).astype(dtype)
    xhat, invstd = ref[1], ref[2]
    for a, r in zip(cpu.tdbn_backward_train(gy, xhat, invstd, gamma, 0.4),
                    numpy_ref.tdbn_backward_train(gy, xhat, invstd, gamma, 0.4)):
        close(a, r, dtype)
    rm, rv = rng.normal(size=C).astype(dtype), rng.uniform(0.5, 2, C).astype(dtype)
    ev = numpy_ref.tdbn_forward_eval(x, gamma, beta, 0.2, rm, rv, 1e-5)
    for a, r in zip(cpu.tdbn_forward_eval(x, gamma, beta, 0.2, rm, rv, 1e-5), ev):
        close(a, r, dtype)
    for a, r in zip(cpu.tdbn_backward_eval(gy, ev[1], ev[2], gamma, 0.2),
                    numpy_ref.tdbn_backward_eval(gy, ev[1], ev[2], gamma, 0.2)):
        close(a, r, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("smooth", [False, True])
@pytest.mark.parametrize("center,detach", [(0.0, False), (0.2, True)])
def test_lif_kernels(dtype, smooth, center, detach):
    rng = np.random.default_rng(22)
    x = rng.uniform(-0.4, 0.9, size=(9, 2 * 1024 + 37)).astype(dtype)   # 3 blocks, last partial
    x[0, :5] = dtype(0.2)             # exactly at threshold: both must say "no spike"
    x[0, 5:10] = np.nextafter(dtype(0.2), dtype(1))
    o_ref, u_ref = numpy_ref.lif_forward(x, 0.2, 0.25, 0.5, center, smooth)
    o, u = cpu.lif_forward(x, 0.2, 0.25, 0.5, center, smooth)
    # the kernels do the same arithmetic in the same dtype and order: bit-identical results
    np.testing.assert_array_equal(u, u_ref)
    np.testing.assert_array_equal(o, o_ref)
    if not smooth:
        assert o[0, :5].sum() == 0 and o[0, 5:10].sum() == 5
    go = rng.normal(size=x.shape).astype(dtype)
    np.testing.assert_array_equal(cpu.lif_backward(go, u_ref, o_ref, 0.25, 0.5, center, detach),
                                  numpy_ref.lif_backward(go, u_ref, o_ref, 0.25, 0.5, center, detach))
    # one step at a time with carried state gives the same spikes as the whole sequence
    u_prev, o_prev = np.zeros_like(x[0]), np.zeros_like(x[0])
    if not smooth:
        for t in range(x.shape[0]):
            for k in (cpu, numpy_ref):
                o_t, u_t = k.lif_step(x[t], u_prev, o_prev, 0.2, 0.25)
                np.testing.assert_array_equal(o_t, o_ref[t])
                np.testing.assert_array_equal(u_t, u_ref[t])
            u_prev, o_prev = u_t, o_t


@pytest.mark.parametrize("dtype", DTYPES)
def test_psp_and_membrane_kernels(dtype):
    rng = np.random.default_rng(23)
    x = rng.uniform(size=(11, 40)).astype(dtype)
    close(cpu.psp_forward(x, 2.0), numpy_ref.psp_forward(x, 2.0), dtype)
    close(cpu.psp_backward(x, 2.0), numpy_ref.psp_backward(x, 2.0), dtype)
    close(cpu.membrane_forward(x, 0.8), numpy_ref.membrane_forward(x, 0.8), dtype)
    g = x[0]
    close(cpu.membrane_backward(g, 11, 0.8), numpy_ref.membrane_backward(g, 11, 0.8), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("decoupled", [True, False])
def test_adam_update_kernels(dtype, decoupled):
    rng = np.random.default_rng(7)
    shape = (5, 33)
    start = [rng.standard_normal(shape).astype(dtype) for _ in range(3)]
    start[2] = np.abs(start[2])                      # exp_avg_sq >= 0
    g = rng.standard_normal(shape).astype(dtype)
    results = []
    for kernels in (numpy_ref, cpu):
        p, m, v = (a.copy() for a in start)
        for step in (1, 2, 3):
            kernels.adam_update(p, g, m, v, 3e-3, 0.9, 0.999, 1e-8, 0.01, decoupled, step)
        results.append((p, m, v))
    for a, b in zip(*results):
        close(a, b, dtype)
    assert not np.allclose(results[0][0], start[0])   # the update did move the parameters


@pytest.mark.parametrize("size, k, stride, pad", [(7, 3, 2, 1), (8, 3, 1, 1), (5, 3, 2, 0),
                                                  (4, 3, 1, 2)])
def test_im2col_writes_every_element(size, k, stride, pad):
    """The Numba im2col fills its output itself (no zero fill first): NaN-filled and zero-filled
    outputs must come out identical, and equal to the NumPy patches."""
    x = np.random.default_rng(3).standard_normal((2, 3, size, size)).astype(np.float32)
    out = (size + 2 * pad - k) // stride + 1
    filled = [np.full((3 * k * k, 2 * out * out), fill, np.float32) for fill in (0.0, np.nan)]
    for cols in filled:
        gemm_conv._im2col(x, cols, gemm_conv._tap_offsets(size, size, k, k, stride, pad, out, out))
    np.testing.assert_array_equal(filled[0], filled[1])
    w = np.random.default_rng(4).standard_normal((2, 3, k, k)).astype(np.float32)
    y = (w.reshape(2, -1) @ filled[1]).reshape(2, 2, out, out).transpose(1, 0, 2, 3)
    np.testing.assert_allclose(y, numpy_ref.conv2d_forward(x, w, None, stride, pad), rtol=1e-5,
                               atol=1e-5)
    # and col2im, its adjoint, writes every element of its output too: <im2col(x), c> = <x, col2im(c)>
    c = np.random.default_rng(5).standard_normal(filled[0].shape)
    back = [np.full((2, 3, size, size), fill) for fill in (0.0, np.nan)]
    for b in back:
        gemm_conv._col2im(c, b, np.zeros(3), gemm_conv._tap_offsets(size, size, k, k, stride, pad, out, out))
    np.testing.assert_array_equal(back[0], back[1])
    assert np.vdot(filled[0].astype(np.float64), c) == pytest.approx(np.vdot(x, back[0]), rel=1e-6)


SPIKE_CASES = {
    "spikes": lambda rng, shape: (rng.random(shape) < 0.2),
    "all zeros": lambda rng, shape: np.zeros(shape),
    "real values": lambda rng, shape: rng.normal(size=shape),
    "one 0.5 in the middle": lambda rng, shape: _late_value(rng.random(shape) < 0.2, 0.5),
    "one 2 at the very end": lambda rng, shape: _late_value(rng.random(shape) < 0.2, 2.0),
}


def _late_value(spikes, value):
    x = spikes.astype(np.float64)
    x.reshape(-1)[-1 if value == 2.0 else x.size // 2] = value
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SPIKE_CASES, ids=list(SPIKE_CASES))
def test_pack_spikes_keeps_spikes_as_bytes_and_refuses_anything_else(dtype, case):
    rng = np.random.default_rng(5)
    x = SPIKE_CASES[case](rng, (3, 7, 5, 41)).astype(dtype)   # many values per CPU chunk
    ref, got = numpy_ref.pack_spikes(x), cpu.pack_spikes(x)
    binary = case in ("spikes", "all zeros")
    assert (ref is not None) == binary and (got is not None) == binary
    if binary:
        assert got.dtype == np.uint8 and got.shape == x.shape
        np.testing.assert_array_equal(got, ref)
        np.testing.assert_array_equal(got.astype(dtype), x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("flips", [0.0, 0.1, 1.0], ids=["unchanged", "few changed", "all changed"])
def test_linear_delta_kernel_moves_the_outputs_to_the_new_input(dtype, flips):
    """y = linear(x_old) moved in place to linear(x_new): the event-driven kernel against the
    reference and against computing linear(x_new) afresh; spikes that flip, and real values."""
    rng = np.random.default_rng(21)
    x_old = (rng.random((9, 13)) < 0.3).astype(dtype)
    flipped = rng.random(x_old.shape) < flips
    x_new = np.where(flipped, 1 - x_old, x_old).astype(dtype)
    x_new[0, :3] = rng.normal(size=3)               # a non-binary change is a change too
    w, b = rng.normal(size=(11, 13)).astype(dtype), rng.normal(size=11).astype(dtype)
    wt = np.ascontiguousarray(w.T)
    y = cpu.linear_forward(x_old, w, b)
    y_ref = y.copy()
    assert cpu.linear_delta_into(y, x_new, x_old, wt) is y
    numpy_ref.linear_delta_into(y_ref, x_new, x_old, wt)
    close(y, y_ref, dtype)
    close(y, numpy_ref.linear_forward(x_new, w, b), dtype)


def test_linear_delta_kernel_refuses_what_does_not_fit():
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match="do not fit"):
        cpu.linear_delta_into(np.zeros((4, 5)), x, x, np.zeros((2, 5)))
    with pytest.raises(ValueError, match="do not fit"):
        cpu.linear_delta_into(np.zeros((4, 5), np.float32), x, x, np.zeros((3, 5)))
    with pytest.raises(ValueError, match="C-contiguous"):
        cpu.linear_delta_into(np.zeros((5, 4)).T, x, x, np.zeros((3, 5)))
