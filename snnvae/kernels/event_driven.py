"""Event-driven kernels: linear and conv layers fed with spikes, computed without multiplying.

When every input value is 0 or 1, a weighted sum needs no multiplication. For one row s of
spikes (a time step of one image),

    y[o] = b[o] + sum_i w[o, i] s[i] = b[o] + sum_{i : s[i] = 1} w[o, i]

so y is the bias plus the weight columns of the active inputs, added up. A dense kernel does
F_in * F_out multiply-adds per row whatever the input; this one does (number of spikes) * F_out
additions and skips the silent inputs, so its cost is proportional to the firing rate. The same
holds for a convolution: each input spike adds its kernel slice w[:, c, p, q] to the outputs
it reaches (a scatter), and silent pixels cost nothing but the test that finds them silent.

Same names of arguments, shapes and results as ``linear_forward`` and ``conv2d_forward`` in
``numpy_ref`` (forward passes only; the tests compare them). The weights are re-laid out on each
call so that one event adds one contiguous vector of C_out (or F_out) values; a layer that runs
many times would keep that copy instead. The output dtype is that of the dense kernel:
``np.result_type(spikes, w)``.

Parallelism: ``prange`` over rows (linear) or images (conv); each iteration writes only its own
output, so no two threads touch the same element and the sums come out in a fixed order.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import scatter

_JIT = dict(cache=True, nogil=True)


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


@njit(**_JIT)
def _count_non_binary(flat):
    """How many values of ``flat`` are neither 0 nor 1 (NaN counts). No early exit and no
    branch: a branch per value, mispredicted half the time on random spikes at rate 0.5, took
    10 ms instead of 0.17 ms for 2 M values."""
    bad = 0
    for k in range(flat.size):
        bad += (flat[k] != 0) & (flat[k] != 1)
    return bad


def check_binary(spikes, name="spikes"):
    """Raise ValueError unless every value of ``spikes`` is 0 or 1 (bool arrays always are)."""
    a = np.asarray(spikes)
    if a.dtype == np.bool_ or a.size == 0:
        return
    flat = a.ravel()
    bad = _count_non_binary(flat)
    if bad:
        k = int(np.flatnonzero((flat != 0) & (flat != 1))[0])
        raise ValueError(
            f"event-driven kernels need binary {name} (every value 0 or 1), but {bad} of its "
            f"{a.size} values are not, the first {flat[k]!r} at flat index {k}; "
            f"use the dense kernels (snnvae.kernels.cpu) for real-valued inputs")


def firing_rate(spikes):
    """Fraction of the entries of a binary array that are 1 (0.0 for an empty array)."""
    check_binary(spikes)
    a = np.asarray(spikes)
    return float(np.count_nonzero(a)) / a.size if a.size else 0.0


def _prepare(spikes, w, b, ndim):
    """Validated contiguous spikes, the output dtype, and the bias (zeros for None) in it.
    The shapes are checked here because the compiled loops do not check their indices."""
    spikes = np.ascontiguousarray(spikes)
    if spikes.ndim != ndim or w.ndim != ndim or spikes.shape[1] != w.shape[1]:
        raise ValueError(f"spikes {spikes.shape} and weight {w.shape} do not fit: expected "
                         f"{ndim}-D arrays with spikes.shape[1] == w.shape[1] (inputs)")
    if b is not None and np.shape(b) != (w.shape[0],):
        raise ValueError(f"bias of shape {np.shape(b)} for {w.shape[0]} outputs")
    check_binary(spikes)
    dtype = np.result_type(spikes.dtype, w.dtype)
    c_out = w.shape[0]
    init = np.zeros(c_out, dtype=dtype) if b is None else np.asarray(b, dtype=dtype)
    return spikes, dtype, init


# --------------------------------------------------------------------------------------------
# Linear:  y[r, o] = b[o] + sum_{i : s[r, i] = 1} w[o, i]
# --------------------------------------------------------------------------------------------


@njit(parallel=True, **_JIT)
def _event_linear(spikes, wt, init, y):
    """spikes (M, F_in), wt = w^T (F_in, F_out), init (F_out,) -> y (M, F_out), in place."""
    M, F_in = spikes.shape
    F_out = wt.shape[1]
    for r in prange(M):
        y[r, :] = init
        for i in range(F_in):
            if spikes[r, i] != 0:
                for o in range(F_out):       # one contiguous row per event: F_out additions
                    y[r, o] += wt[i, o]


@njit(parallel=True, **_JIT)
def _transpose_into(a, out):
    """out = a.T for a 2-D a, copied in 32 x 32 tiles (a plain a.T copy strides through
    memory and was 5x slower on a 2560 x 512 weight)."""
    R, C = a.shape
    for tile in prange((R + 31) // 32):
        r0 = tile * 32
        for c0 in range(0, C, 32):
            for c in range(c0, min(C, c0 + 32)):
                for r in range(r0, min(R, r0 + 32)):
                    out[c, r] = a[r, c]


def event_linear_forward(spikes, w, b):
    """spikes (M, F_in) of 0/1, w (F_out, F_in), b (F_out,) or None -> y (M, F_out).

    Equals ``numpy_ref.linear_forward(spikes, w, b)`` = spikes @ w.T + b, with
    count_nonzero(spikes) * F_out additions and no multiplication.
    """
    spikes, dtype, init = _prepare(spikes, w, b, 2)
    wt = np.empty((w.shape[1], w.shape[0]), dtype=dtype)   # (F_in, F_out): row i = column i of w
    _transpose_into(np.asarray(w, dtype=dtype), wt)
    y = np.empty((spikes.shape[0], w.shape[0]), dtype=dtype)
    _event_linear(spikes, wt, init, y)
    return y


# --------------------------------------------------------------------------------------------
# Delta update of a linear layer: y += (x_new - x_old) wt, one row of wt per changed input.
# A layer re-run on an input that differs from the last one in a few entries (FSVAE's
# posterior re-runs its network on each longer prefix; the spikes of the rows it saw before
# mostly stay as they were) needs (changed entries) * F_out additions instead of F_in * F_out
# multiply-adds per row.
# --------------------------------------------------------------------------------------------


@njit(inline="always", **_JIT)
def add_weighted_rows(yr, wt, rows, weights, n):
    """yr += sum_{k < n} weights[k] wt[rows[k]], in place: the rows of wt added four at a time,
    so yr is read and written once per four (1.3x faster than one at a time on FSVAE's
    posterior, where the rows of wt come from L3)."""
    F_out = yr.shape[0]
    k = 0
    while k + 4 <= n:
        a, b, c, e = wt[rows[k]], wt[rows[k + 1]], wt[rows[k + 2]], wt[rows[k + 3]]
        da, db, dc, de = weights[k], weights[k + 1], weights[k + 2], weights[k + 3]
        for o in range(F_out):
            yr[o] += da * a[o] + db * b[o] + dc * c[o] + de * e[o]
        k += 4
    for j in range(k, n):
        a, da = wt[rows[j]], weights[j]
        for o in range(F_out):
            yr[o] += da * a[o]


@njit(parallel=True, **_JIT)
def _delta_rows(y, x_new, x_old, wt):
    """y[r] += sum_i (x_new[r, i] - x_old[r, i]) wt[i] over the i where they differ, in place.
    One parallel iteration per row: it lists the changed inputs, then adds their rows of wt
    (``add_weighted_rows``)."""
    R, F_in = x_new.shape
    for r in prange(R):
        xn, xo = x_new[r], x_old[r]
        changed = np.empty(F_in, dtype=np.int64)
        signs = np.empty(F_in, dtype=y.dtype)
        n = 0
        for i in range(F_in):
            d = xn[i] - xo[i]
            if d != 0:
                changed[n] = i
                signs[n] = d
                n += 1
        add_weighted_rows(y[r], wt, changed, signs, n)


def linear_delta_into(y, x_new, x_old, wt):
    """y (R, F_out) += (x_new - x_old) @ wt in place, returns y; x_new, x_old (R, F_in), wt the
    weight transposed (F_in, F_out), all of one dtype. Equals ``numpy_ref.linear_delta_into``
    up to the order of the additions."""
    R, F_in = x_new.shape
    if (x_old.shape != x_new.shape or wt.shape[0] != F_in or y.shape != (R, wt.shape[1])
            or not (y.dtype == x_new.dtype == x_old.dtype == wt.dtype)):
        raise ValueError(f"linear_delta_into: y {y.shape} {y.dtype}, x_new {x_new.shape} "
                         f"{x_new.dtype}, x_old {x_old.shape} {x_old.dtype} and wt {wt.shape} "
                         f"{wt.dtype} do not fit: expected y (R, F_out), x (R, F_in), "
                         f"wt (F_in, F_out), one dtype")
    if not y.flags.c_contiguous:
        raise ValueError("linear_delta_into adds into y in place: y must be C-contiguous")
    _delta_rows(y, np.ascontiguousarray(x_new), np.ascontiguousarray(x_old),
                np.ascontiguousarray(wt))
    return y


# --------------------------------------------------------------------------------------------
# Convolution, by scattering: ``scatter.conv2d_forward`` walks the input spikes and adds, for each
# and each kernel tap (p, q) that lands on an output (i, j), the contiguous vector w[:, c, p, q]
# to the output's channels (see ``kernels/scatter.py`` for the reach table that ties the input
# pixel, the tap and the output pixel). For an input of 1 it adds without multiplying.
# --------------------------------------------------------------------------------------------


def event_conv2d_forward(spikes, w, b, stride, padding):
    """spikes (B, C_in, H, W) of 0/1, w (C_out, C_in, kh, kw), b (C_out,) or None
    -> y (B, C_out, Ho, Wo), Ho = (H + 2 padding - kh) // stride + 1.

    Equals ``numpy_ref.conv2d_forward(spikes, w, b, stride, padding)`` with
    sum over spikes of (the outputs it reaches) * C_out additions and no multiplication.
    """
    spikes, dtype, init = _prepare(spikes, w, b, 4)
    return scatter.conv2d_forward(spikes, np.asarray(w, dtype=dtype), init, stride, padding)
