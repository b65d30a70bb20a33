"""Scatter kernels: convolutions and transposed convolutions that visit only the nonzero values
of their input x.

In a spiking network most inputs of a layer are 0 (neurons that did not fire) and the rest are
1. A dense kernel multiplies every input with every weight; these kernels walk the nonzero
inputs ("events") and skip the rest, so their cost is proportional to the firing rate.

The reach table
---------------
Both kinds of convolution connect an input row h to an output row i through a kernel tap p:

    convolution            y[b, o, i, j] += x[b, c, h, v] w[o, c, p, q]   where h = i s - pad + p
                           so input h reaches  i = (h + pad - p) / s  when that is an integer
    transposed convolution y[b, o, i, j] += x[b, c, h, v] w[c, o, p, q]   where i = h s - pad + p

(columns v, j, q alike). ``reach_table`` tabulates reach[h, p] = that i, or -1 where tap p
lands between two strided outputs or outside [0, Ho); once per call, so the inner loops only
test a sign. With the weights laid out as taps[c, p, q, :] (C_out contiguous values: w[:, c, p,
q] for a convolution, w[c, :, p, q] for a transposed one), one event and one tap that lands
add one contiguous vector of C_out values:

    acc[i, j, :] += x[b, c, h, v] * taps[c, p, q, :]

Column runs
-----------
Along a row the taps that land do so on consecutive output columns. In a transposed
convolution j = v s - pad + q grows by 1 with q; in a convolution the taps q = r, r + s, ...
of one residue r = (v + pad) mod s land on j = (v + pad - q) / s, consecutive as q falls. So
``column_runs`` orders the columns q of the taps (identity for a transposed convolution,
residue by residue and falling within each for a convolution) and tabulates, for each input
column v, the first output column j0[v], the first ordered tap q0[v] and the count n[v] of
the taps that land. One event and one tap row p then add ONE contiguous run of n[v] * C_out
values:

    acc[i, j0 : j0 + n, :] += x[b, c, h, v] * taps[c, p, q0 : q0 + n, :]

three times fewer and three times longer vector loops than tap by tap for 3 x 3 kernels.

A value of exactly 1 (a spike) adds its vector without multiplying; other nonzero values are
multiplied, so any mostly-zero input gives the dense kernels' result (up to the order of the
sums).

Cost: (nonzero inputs) x (taps that land) x C_out multiply-adds, against all inputs x taps x
C_out for the dense kernel. Worth it when few inputs are nonzero and C_out is long enough to
vectorise (the Numba CPU backend decides, ``kernels.cpu``).

Editing the shared pieces (``scatter_image``, ``fill_rows``, ``store_channels_first``): delete
``snnvae/kernels/__pycache__/*.nb[ic]`` afterwards, since Numba's on-disk cache of
``scatter_block``'s kernel is keyed on that file only and would keep the old code.

Layout and threads: every image accumulates channels-last, acc[(i, j), :] (Ho * Wo * C_out
values, cache-sized), and is transposed into y[b] (C_out, Ho, Wo) when its events are done;
``prange`` over images, each writing only its own output.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .numpy_ref import conv_out_size, conv_transpose_out_size

_JIT = dict(cache=True, nogil=True)


@njit(parallel=True, **_JIT)
def _count_nonzero_of_images(flat, step):
    """The number of nonzero values of each of the images 0, step, 2 step, ... of flat
    (B, values per image)."""
    picked = (flat.shape[0] + step - 1) // step
    counts = np.zeros(picked, dtype=np.int64)
    for k in prange(picked):
        row = flat[k * step]
        n = 0
        for v in range(row.shape[0]):
            n += row[v] != 0
        counts[k] = n
    return counts


def nonzero_fraction(x, max_values=None):
    """Fraction of the values of x (B, ...) that are not 0 (0.0 for an empty array). With
    ``max_values``, estimated from evenly spaced images x[::step] holding at most about that
    many values (at least one image): a choice of kernel needs no exact count, and counting
    all of FSVAE's decoder inputs took 3 % of a sampling call. The images are read where they
    lie (a copy of the picked ones took 2 % of a reconstruction)."""
    if x.size == 0:
        return 0.0
    B, per_image = x.shape[0], x.size // x.shape[0]
    step = 1
    if max_values is not None and B > 1:
        step = max(1, -(-B * per_image // max_values))
    counts = _count_nonzero_of_images(np.ascontiguousarray(x).reshape(B, per_image), step)
    return float(counts.sum()) / (counts.size * per_image)


def reach_table(size, k, stride, pad, out, transposed):
    """reach[h, p]: the output index that input index h reaches through kernel tap p, or -1.
    Shape (size, k), int64. ``transposed`` selects i = h s - pad + p (transposed convolution)
    instead of h = i s - pad + p (convolution); either way only 0 <= i < out is kept."""
    h = np.arange(size)[:, None]
    p = np.arange(k)[None, :]
    if transposed:
        i = h * stride - pad + p
        hit = (i >= 0) & (i < out)
    else:
        num = h + pad - p                      # = i * stride where there is a hit
        i = num // stride
        hit = (num >= 0) & (num % stride == 0) & (i < out)
    return np.where(hit, i, -1).astype(np.int64)


def column_runs(size, k, stride, pad, out, transposed):
    """The order of the kernel's columns and, per input column v, where its landing taps run.

    Returns (order, j0, q0, n): taps[..., order[m], :] is the m-th ordered tap column; input
    column v reaches output columns j0[v] + m for m < n[v] through ordered tap columns
    q0[v] + m (n[v] = 0: it reaches none). int64 arrays, order (k,), the rest (size,). See
    "Column runs" above; ``reach_table(size, k, ...)`` holds the same pairs tap by tap."""
    if transposed:
        order = np.arange(k)
        first_j = np.arange(size) * stride - pad            # tap 0's column, then +1 per tap
        q_first = np.zeros(size, dtype=np.int64)
        count = np.full(size, k)
    else:
        order = np.array([q for r in range(stride) for q in range(k - 1, -1, -1)
                          if q % stride == r], dtype=np.int64)
        v_pad = np.arange(size) + pad
        residue = v_pad % stride
        count = np.array([len(range(r, k, stride)) for r in residue], dtype=np.int64)
        q_first = np.array([int(np.flatnonzero(order % stride == r)[0]) if c else 0
                            for r, c in zip(residue, count)], dtype=np.int64)
        q_top = order[np.minimum(q_first, k - 1)]            # the residue's largest tap
        first_j = (v_pad - q_top) // stride
    skip = np.clip(-first_j, 0, None)                       # taps that land left of column 0
    stop = np.minimum(count, out - first_j)                 # ... and right of the last one
    n = np.clip(stop - skip, 0, None)
    return (order.astype(np.int64), (first_j + skip).astype(np.int64),
            (q_first + skip).astype(np.int64), n.astype(np.int64))


# --------------------------------------------------------------------------------------------
# The compiled walk over events, and the pieces it shares with ``scatter_block``
# --------------------------------------------------------------------------------------------


@njit(**_JIT)
def scatter_image(x, taps, reach_h, j0, q0, n, Wo, acc, channels, values):
    """Add the events of one image x (C_in, H, W) into acc (Ho * Wo * C_out,), channels last
    and flat: for every nonzero x[c, h, v] and tap row p that reaches i = reach_h[h, p],
    acc[i, j0[v] : j0[v] + n[v], :] += x[c, h, v] taps[c, p, q0[v] : q0[v] + n[v], :], with taps
    (C_in, kh, kw, C_out) in ``column_runs`` order. channels (C_in,) int64 and values (C_in,)
    are scratch space.

    Pixel by pixel: the nonzero channels of input pixel (h, v) are listed first (without a
    branch: every channel is written and the count moves on only for a nonzero one, since a
    mispredicted branch per channel cost as much as the adds), then each tap row's output
    run takes all of them in turn, so the (at most kh) runs a pixel touches stay in the L1
    cache while they are added to. Walking channel by channel instead (every pixel of
    channel 0, then of channel 1, ...) touched the whole accumulator, 128 KB for a
    32 x 32 x 32 output, once per channel, and was 1.3-1.5x slower. The runs are indexed as
    slices with loop counters from 0: an index computed as base + k made Numba check it for
    wraparound and the loop did not vectorise (3-8x slower)."""
    C_in, H, W = x.shape
    _, kh, kw, C_out = taps.shape
    flat_taps = taps.reshape(-1)
    for h in range(H):
        for v in range(W):
            count = n[v]
            if count == 0:
                continue
            active = 0
            for c in range(C_in):
                value = x[c, h, v]
                channels[active] = c
                values[active] = value
                active += value != 0
            if active == 0:
                continue
            run = count * C_out
            for p in range(kh):
                i = reach_h[h, p]
                if i < 0:
                    continue
                start = (i * Wo + j0[v]) * C_out
                out = acc[start:start + run]
                for e in range(active):
                    first = ((channels[e] * kh + p) * kw + q0[v]) * C_out
                    weights = flat_taps[first:first + run]
                    value = values[e]
                    if value == 1:
                        for k in range(run):
                            out[k] += weights[k]
                    else:
                        for k in range(run):
                            out[k] += value * weights[k]


@njit(**_JIT)
def fill_rows(acc, init):
    """acc[r, :] = init for every row r."""
    for r in range(acc.shape[0]):
        for o in range(acc.shape[1]):
            acc[r, o] = init[o]


@njit(**_JIT)
def store_channels_first(acc, y):
    """y (C_out, L) = acc (L, C_out) transposed: row by row of y, so that the writes, which go
    to memory (y is the layer's output), are long contiguous runs, and the strided reads hit
    acc, which is in cache. Blocks of 16 rows of acc (all C_out channels of 16 pixels, then
    the next 16) wrote 64-byte pieces of C_out rows in turn and took 2.4x as long on FSVAE's
    last block (36 against 15 ms for 1024 images of 32 x 32 x 32)."""
    L, C_out = acc.shape
    for o in range(C_out):
        for r in range(L):
            y[o, r] = acc[r, o]


@njit(parallel=True, **_JIT)
def _scatter_forward(x, taps, init, reach_h, j0, q0, n, y):
    """x (B, C_in, H, W), taps (C_in, kh, kw, C_out) in column-run order, init (C_out,) -> y
    (B, C_out, Ho, Wo) (contiguous), every element written: y[b, :, i, j] = init + the events
    that reach (i, j)."""
    B, C_in = x.shape[0], x.shape[1]
    C_out = taps.shape[3]
    Ho, Wo = y.shape[2], y.shape[3]
    for b in prange(B):
        acc = np.empty((Ho * Wo, C_out), dtype=y.dtype)  # channels last: a row per output pixel
        channels = np.empty(C_in, dtype=np.int64)
        values = np.empty(C_in, dtype=x.dtype)
        fill_rows(acc, init)
        scatter_image(x[b], taps, reach_h, j0, q0, n, Wo, acc.reshape(-1), channels, values)
        store_channels_first(acc, y[b].reshape(C_out, Ho * Wo))


# --------------------------------------------------------------------------------------------
# The kernels, with the arguments and results of the dense ones (numpy_ref)
# --------------------------------------------------------------------------------------------


def walk_plan(x_shape, taps, stride, padding, Ho, Wo, transposed):
    """What ``scatter_image`` needs besides the image: taps (C_in, kh, kw, C_out) with their
    columns in run order, the row reach table and the column runs (j0, q0, n)."""
    H, W = x_shape[-2:]
    kh, kw = taps.shape[1:3]
    order, j0, q0, n = column_runs(W, kw, stride, padding, Wo, transposed)
    return (np.ascontiguousarray(taps[:, :, order, :]),
            reach_table(H, kh, stride, padding, Ho, transposed), j0, q0, n)


def bias_init(b, C_out, dtype):
    """The accumulator's starting row: the bias, or zeros without one."""
    return np.zeros(C_out, dtype=dtype) if b is None else np.asarray(b, dtype=dtype)


def _forward(x, b, y_shape, plan):
    dtype = plan[0].dtype
    y = np.empty(y_shape, dtype=dtype)
    _scatter_forward(np.ascontiguousarray(x), plan[0], bias_init(b, y_shape[1], dtype), *plan[1:],
                     y)
    return y


def conv2d_forward(x, w, b, stride, padding):
    """x (B, C_in, H, W) mostly 0, w (C_out, C_in, kh, kw), b (C_out,) or None
    -> y (B, C_out, Ho, Wo) = ``numpy_ref.conv2d_forward(x, w, b, stride, padding)``."""
    B, _, H, W = x.shape
    C_out, _, kh, kw = w.shape
    Ho, Wo = conv_out_size(H, kh, stride, padding), conv_out_size(W, kw, stride, padding)
    taps = w.transpose(1, 2, 3, 0).astype(np.result_type(x, w))
    return _forward(x, b, (B, C_out, Ho, Wo),
                    walk_plan(x.shape, taps, stride, padding, Ho, Wo, transposed=False))


def transposed_plan(x_shape, w, dtype, stride, padding, output_padding):
    """A transposed convolution's walk plan (``walk_plan``, taps in ``dtype``) and its output
    size (Ho, Wo)."""
    H, W = x_shape[-2:]
    kh, kw = w.shape[2:]
    Ho = conv_transpose_out_size(H, kh, stride, padding, output_padding)
    Wo = conv_transpose_out_size(W, kw, stride, padding, output_padding)
    taps = w.transpose(0, 2, 3, 1).astype(dtype)
    return walk_plan(x_shape, taps, stride, padding, Ho, Wo, transposed=True), (Ho, Wo)


def conv_transpose2d_forward(x, w, b, stride, padding, output_padding):
    """x (B, C_in, H, W) mostly 0, w (C_in, C_out, kh, kw), b (C_out,) or None -> y (B, C_out,
    Ho, Wo) = ``numpy_ref.conv_transpose2d_forward(x, w, b, stride, padding, output_padding)``."""
    plan, out_size = transposed_plan(x.shape, w, np.result_type(x, w), stride, padding,
                                     output_padding)
    return _forward(x, b, (x.shape[0], w.shape[1], *out_size), plan)
