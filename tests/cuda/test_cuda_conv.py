"""The tiled GEMM and the linear / conv / transposed-conv kernels against the Numba CPU kernels.

Shapes are tiny because the simulator runs every CUDA thread as a Python thread, yet chosen so
that (with the simulator's TILE of 4) M, N and K each span several tiles somewhere, most of them
with a ragged last tile: channel counts 2, 3, 5, batches 2-3, non-square images.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_matches

from snnvae.kernels import cpu
from snnvae.kernels.cuda import conv, gemm, launch


def random(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def assert_all_match(got, want, what):
    assert len(got) == len(want)
    for name, g, w in zip(("gx", "gw", "gb"), got, want):
        if w is None:
            assert g is None, f"{what} {name}: expected None"
        else:
            assert_matches(g, w, what=f"{what} {name}")


# --------------------------------------------------------------------------------------------
# GEMM
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trans_a", [False, True], ids=["A", "At"])
@pytest.mark.parametrize("trans_b", [False, True], ids=["B", "Bt"])
def test_gemm_all_transposes_odd_sizes(rng, dtype, trans_a, trans_b):
    M, K, N = 5, 7, 6
    a = random(rng, (K, M) if trans_a else (M, K), dtype)
    b = random(rng, (N, K) if trans_b else (K, N), dtype)
    want = (a.T if trans_a else a) @ (b.T if trans_b else b)
    assert_matches(gemm.gemm(a, b, trans_a, trans_b), want)


def test_gemm_batched_with_a_shared_operand(rng, dtype):
    a = random(rng, (3, 5, 6), dtype)
    b = random(rng, (6, 2), dtype)                 # one B for the three products
    assert_matches(gemm.gemm(a, b), a @ b)
    bt = random(rng, (3, 2, 6), dtype)
    assert_matches(gemm.gemm(a[0], bt, trans_b=True), a[0] @ bt.transpose(0, 2, 1))


def test_gemm_scales_and_accumulates_in_place(rng, dtype):
    a, b = random(rng, (5, 3), dtype), random(rng, (5, 6), dtype)
    c = random(rng, (3, 6), dtype)
    want = 0.5 * a.T @ b - 2.0 * c
    out = launch.to_device(c)
    gemm.gemm(a, b, trans_a=True, out=out, alpha=0.5, beta=-2.0)
    assert_matches(out, want)
    c_host = c.copy()
    assert gemm.gemm(a, b, trans_a=True, out=c_host, alpha=0.5, beta=-2.0) is c_host
    assert_matches(c_host, want)


def test_tiled_result_does_not_depend_on_the_grid(rng):
    """One block walking every tile, or one block per tile: the same numbers."""
    a, b = random(rng, (2, 9, 7), np.float64), random(rng, (2, 7, 10), np.float64)
    results = []
    for grid in [(1, 1, 1), gemm.tile_grid(9, 10, 2, max_blocks=10**6)[0]]:
        out = launch.empty((2, 9, 10), np.float64)
        gemm.gemm_into(out, launch.to_device(a), launch.to_device(b), grid=grid)
        results.append(out.copy_to_host())
    np.testing.assert_array_equal(results[0], results[1])
    assert_matches(results[0], a @ b)


# --------------------------------------------------------------------------------------------
# Linear
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rows, f_in, f_out, has_bias", [(3, 5, 6, True), (2, 7, 3, False)])
def test_linear(rng, dtype, rows, f_in, f_out, has_bias):
    x, w = random(rng, (rows, f_in), dtype), random(rng, (f_out, f_in), dtype)
    b = random(rng, (f_out,), dtype) if has_bias else None
    assert_matches(conv.linear_forward(x, w, b), cpu.linear_forward(x, w, b), what="y")
    gy = random(rng, (rows, f_out), dtype)
    assert_all_match(conv.linear_backward(gy, x, w, has_bias),
                     cpu.linear_backward(gy, x, w, has_bias), "linear")


def test_linear_delta_into_host_and_device(rng, dtype):
    x_old = (rng.random((5, 6)) < 0.4).astype(dtype)
    x_new = np.where(rng.random(x_old.shape) < 0.3, 1 - x_old, x_old).astype(dtype)
    wt = random(rng, (6, 7), dtype)
    y0 = random(rng, (5, 7), dtype)
    want = cpu.linear_delta_into(y0.copy(), x_new, x_old, wt)
    y_host = y0.copy()
    assert conv.linear_delta_into(y_host, x_new, x_old, wt) is y_host
    assert_matches(y_host, want, what="host y")
    y_dev = launch.to_device(y0)
    assert conv.linear_delta_into(y_dev, launch.to_device(x_new), launch.to_device(x_old),
                                  launch.to_device(wt)) is y_dev
    assert_matches(y_dev.copy_to_host(), want, what="device y, in place")


# --------------------------------------------------------------------------------------------
# Convolution: (batch, C_in, C_out, H, W, kernel, stride, padding, has_bias)
# --------------------------------------------------------------------------------------------

CONV_CASES = {
    "k3s1p1": (2, 2, 5, 4, 3, 3, 1, 1, True),
    "k3s2p1": (2, 3, 2, 5, 4, 3, 2, 1, False),
    "k3s1p0": (2, 2, 3, 5, 3, 3, 1, 0, True),
    "k2s2p0": (2, 3, 2, 4, 5, 2, 2, 0, True),
    "k1s1p0": (3, 2, 3, 3, 4, 1, 1, 0, True),
    "k1s2p0": (2, 2, 3, 3, 4, 1, 2, 0, False),    # input pixels that no output reads
    "k1s1p1": (2, 2, 2, 3, 2, 1, 1, 1, True),     # output border that reads only padding
}


@pytest.mark.parametrize("case", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_conv2d(rng, dtype, case):
    B, C_in, C_out, H, W, k, stride, pad, has_bias = case
    x, w = random(rng, (B, C_in, H, W), dtype), random(rng, (C_out, C_in, k, k), dtype)
    b = random(rng, (C_out,), dtype) if has_bias else None
    want = cpu.conv2d_forward(x, w, b, stride, pad)
    assert_matches(conv.conv2d_forward(x, w, b, stride, pad), want, what="y")
    gy = random(rng, want.shape, dtype)
    assert_all_match(conv.conv2d_backward(gy, x, w, stride, pad, has_bias),
                     cpu.conv2d_backward(gy, x, w, stride, pad, has_bias), "conv2d")


# --------------------------------------------------------------------------------------------
# Transposed convolution: (batch, C_in, C_out, H, W, kernel, stride, padding, output_padding,
# has_bias)
# --------------------------------------------------------------------------------------------

CONV_TRANSPOSE_CASES = {
    "k3s2p1op1": (2, 3, 2, 3, 2, 3, 2, 1, 1, True),
    "k3s2p1op0": (2, 2, 5, 2, 3, 3, 2, 1, 0, False),
    "k3s1p1": (2, 3, 2, 3, 4, 3, 1, 1, 0, True),
    "k2s2p0": (3, 2, 3, 2, 2, 2, 2, 0, 0, True),
    "k2s2p0op1": (2, 2, 2, 2, 3, 2, 2, 0, 1, False),
    "k1s1p0": (2, 2, 3, 3, 2, 1, 1, 0, 0, True),
    "k1s2p0op1": (2, 3, 2, 2, 3, 1, 2, 0, 1, True),   # outputs that no input reaches
}


@pytest.mark.parametrize("case", CONV_TRANSPOSE_CASES.values(), ids=CONV_TRANSPOSE_CASES.keys())
def test_conv_transpose2d(rng, dtype, case):
    B, C_in, C_out, H, W, k, stride, pad, out_pad, has_bias = case
    x, w = random(rng, (B, C_in, H, W), dtype), random(rng, (C_in, C_out, k, k), dtype)
    b = random(rng, (C_out,), dtype) if has_bias else None
    want = cpu.conv_transpose2d_forward(x, w, b, stride, pad, out_pad)
    assert_matches(conv.conv_transpose2d_forward(x, w, b, stride, pad, out_pad), want, what="y")
    gy = random(rng, want.shape, dtype)
    assert_all_match(conv.conv_transpose2d_backward(gy, x, w, stride, pad, has_bias),
                     cpu.conv_transpose2d_backward(gy, x, w, stride, pad, has_bias),
                     "conv_transpose2d")


# --------------------------------------------------------------------------------------------
# Host in, host out; device in, device out
# --------------------------------------------------------------------------------------------


def test_results_stay_where_the_inputs_are(rng):
    shapes = dict(x=(2, 2, 3, 3), gy=(2, 3, 3, 3), w=(3, 2, 1, 1), wt=(2, 3, 1, 1), b=(3,),
                  xl=(2, 3), wl=(4, 3), bl=(4,), gyl=(2, 4))
    host = {name: random(rng, shape, np.float64) for name, shape in shapes.items()}
    device = {name: launch.to_device(a) for name, a in host.items()}
    calls = {
        "gemm": lambda a: gemm.gemm(a["xl"], a["wl"], trans_b=True),
        "linear_forward": lambda a: conv.linear_forward(a["xl"], a["wl"], a["bl"]),
        "linear_backward": lambda a: conv.linear_backward(a["gyl"], a["xl"], a["wl"], True),
        "conv2d_forward": lambda a: conv.conv2d_forward(a["x"], a["w"], a["b"], 1, 0),
        "conv2d_backward": lambda a: conv.conv2d_backward(a["gy"], a["x"], a["w"], 1, 0, True),
        "conv_transpose2d_forward": lambda a: conv.conv_transpose2d_forward(
            a["x"], a["wt"], a["b"], 1, 0, 0),
        "conv_transpose2d_backward": lambda a: conv.conv_transpose2d_backward(
            a["gy"], a["x"], a["wt"], 1, 0, True),
    }
    for name, call in calls.items():
        from_host, from_device = call(host), call(device)
        if not isinstance(from_host, tuple):
            from_host, from_device = (from_host,), (from_device,)
        for h, d in zip(from_host, from_device):
            assert isinstance(h, np.ndarray), f"{name}: host inputs gave {type(h)}"
            assert launch.is_device_array(d), f"{name}: device inputs gave {type(d)}"
            np.testing.assert_array_equal(d.copy_to_host(), h, err_msg=name)


def test_gemm_refuses_a_host_out_with_device_operands(rng):
    a = launch.to_device(random(rng, (3, 4), np.float64))
    with pytest.raises(ValueError, match="device array as out"):
        gemm.gemm(a, random(rng, (4, 2), np.float64), out=np.zeros((3, 2)))
