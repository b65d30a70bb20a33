"""Dense convolutions as matrix products over chunks of images, one worker thread per core.

im2col writes the patches of c images side by side:

    cols[(ch, p, q), b*L + (i*Wo + j)] = x[b, ch, i*s - pad + p, j*s - pad + q]    (K x c*L)

so that W (C_out x K) @ cols is one large matrix product even when the feature maps are tiny
(2 x 2 in the FSVAE bottleneck), where one product per image would waste BLAS. The same index
map read backwards (col2im, a scatter-add) is the input gradient of a convolution and the
forward pass of a transposed convolution:

    conv2d            y = W @ im2col(x)                  gW = gy @ im2col(x)^T,  gx = col2im(W^T gy)
    conv_transpose2d  y = col2im(W^T x)                  gW = x @ im2col(gy)^T,  gx = W @ im2col(gy)

(W reshaped to (C_out, K) for the conv, (C_in, K) for the transposed one; x and gy channel
major, (C, c*L)).

Why chunks: for the large feature maps (the decoder's last 32 x 32 layers) the patch matrix of
a whole batch is tens of MB, so writing it and reading it back runs at memory speed. The images
are taken c at a time, c chosen so that the patch matrix stays near _CHUNK_ELEMENTS (a few MB,
cache-sized); small layers still get all images in one chunk.

Why workers (``_run_chunks``): a chunk's gather and its products are small. Run one after the
other with Numba's parallel loops and OpenBLAS's threads, every chunk splits over the cores and
joins again three times, and the cores wait on each other (badly so on a shared virtual
machine, where a core is sometimes taken away). With one worker thread per core, each taking
the next chunk as it finishes one and running its gather serially and its products on one
BLAS thread (``blas_threads.single_threaded``), the cores never wait for each other inside the
layer: the last stride-2 transposed convolution's backward of FSVAE at batch 64 ran 1.3-1.7x as
fast. Each chunk's weight gradient goes into its own slot, summed in chunk order at the end,
so the result does not depend on which worker took which chunk.
"""
from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit, prange

from . import blas_threads, scatter
from .numpy_ref import conv_out_size, conv_transpose_out_size

_JIT = dict(cache=True, nogil=True)

_CHUNK_ELEMENTS = 1 << 18
_WORKERS = True      # False: one chunk after the other with parallel gathers and BLAS threads
_MIN_CHUNKS_PER_WORKER = 4   # fewer chunks: one after the other (the split would not balance)


def _image_chunks(B, per_image):
    """[start, stop) ranges of images whose patch matrices hold about _CHUNK_ELEMENTS each."""
    step = max(1, min(B, _CHUNK_ELEMENTS // max(per_image, 1)))
    return [(b0, min(B, b0 + step)) for b0 in range(0, B, step)]


@functools.lru_cache(maxsize=64)
def _tap_offsets(H, W, kh, kw, stride, pad, Ho, Wo):
    """offsets[p*kw + q, i*Wo + j] = h*W + v, the flat index in an (H, W) map of the input that
    output (i, j) reads through kernel tap (p, q) (h = i*stride - pad + p, v likewise), or -1
    where that falls in the zero padding. Shape (kh*kw, Ho*Wo), int64, read-only (cached)."""
    i = np.arange(Ho)[:, None]
    j = np.arange(Wo)[None, :]
    offsets = np.empty((kh * kw, Ho * Wo), dtype=np.int64)
    for p in range(kh):
        for q in range(kw):
            h, v = i * stride - pad + p, j * stride - pad + q
            inside = (h >= 0) & (h < H) & (v >= 0) & (v < W)
            offsets[p * kw + q] = np.where(inside, h * W + v, -1).ravel()
    offsets.flags.writeable = False
    return offsets


# --------------------------------------------------------------------------------------------
# The gathers, each a row (or plane) kernel and two drivers: parallel over rows (one chunk at a
# time, all cores) and serial (inside a worker thread, which has its core to itself).
# --------------------------------------------------------------------------------------------


@njit(**_JIT)
def _im2col_row(planes, cols, offsets, row):
    """cols[row, b*L + k] = planes[b, c].flat[offsets[t, k]] (0 where the offset is -1) for
    row = (c, t) and every image b: one long gather per (row, image) instead of a short copy per
    output row (with 2 x 2 to 16 x 16 outputs those copies were 2 to 16 values long, and their
    call overhead made im2col 2-7x slower)."""
    taps, L = offsets.shape
    c = row // taps
    offset = offsets[row % taps]
    zero = cols.dtype.type(0)
    for b in range(planes.shape[0]):
        base = b * L
        for k in range(L):
            m = offset[k]
            value = planes[b, c, max(m, 0)]     # read at a safe index, then select
            cols[row, base + k] = value if m >= 0 else zero


@njit(parallel=True, **_JIT)
def _im2col(x, cols, offsets):
    """Writes every element of cols (see _im2col_row), rows in parallel."""
    B, C = x.shape[0], x.shape[1]
    planes = x.reshape(B, C, -1)
    for row in prange(C * offsets.shape[0]):
        _im2col_row(planes, cols, offsets, row)


@njit(**_JIT)
def _im2col_serial(x, cols, offsets):
    B, C = x.shape[0], x.shape[1]
    planes = x.reshape(B, C, -1)
    for row in range(C * offsets.shape[0]):
        _im2col_row(planes, cols, offsets, row)


def im2col(x, kh, kw, stride, pad, Ho, Wo, serial=False):
    """x (B, C, H, W) -> cols (C*kh*kw, B*Ho*Wo); zero where the window leaves the image."""
    B, C, H, W = x.shape
    cols = np.empty((C * kh * kw, B * Ho * Wo), dtype=x.dtype)
    kernel = _im2col_serial if serial else _im2col
    kernel(np.ascontiguousarray(x), cols, _tap_offsets(H, W, kh, kw, stride, pad, Ho, Wo))
    return cols


@njit(**_JIT)
def _col2im_plane(cols, planes, init, offsets, bc):
    """planes[b, c] = init[c] + the scatter-add of cols through offsets, for bc = (b, c): every
    element of the plane is written, each summing its taps in order."""
    C = planes.shape[1]
    b = bc // C
    c = bc % C
    plane = planes[b, c]
    plane[:] = init[c]
    taps, L = offsets.shape
    for t in range(taps):
        offset = offsets[t]
        src = cols[c * taps + t, b * L:(b + 1) * L]
        for k in range(L):
            m = offset[k]
            if m >= 0:
                plane[m] += src[k]


@njit(parallel=True, **_JIT)
def _col2im(cols, x, init, offsets):
    """x[b, c] = init[c] + the scatter-add of cols through offsets (the adjoint of _im2col).
    One thread per (image, channel) map: no two threads add into the same element."""
    B, C = x.shape[0], x.shape[1]
    planes = x.reshape(B, C, -1)
    for bc in prange(B * C):
        _col2im_plane(cols, planes, init, offsets, bc)


@njit(**_JIT)
def _col2im_serial(cols, x, init, offsets):
    B, C = x.shape[0], x.shape[1]
    planes = x.reshape(B, C, -1)
    for bc in range(B * C):
        _col2im_plane(cols, planes, init, offsets, bc)


def _col2im_into(cols, x, init, kh, kw, stride, pad, Ho, Wo, serial=False):
    """The adjoint of ``im2col``: cols (C*kh*kw, B*Ho*Wo) -> x (B, C, H, W), summing overlaps,
    plus init per channel, into x (contiguous), with the offsets of its geometry."""
    H, W = x.shape[2:]
    kernel = _col2im_serial if serial else _col2im
    kernel(cols, x, init, _tap_offsets(H, W, kh, kw, stride, pad, Ho, Wo))


def _to_channel_major(a):
    """(B, C, ...) -> (C, B * prod(...)) contiguous."""
    B, C = a.shape[:2]
    return np.ascontiguousarray(a.reshape(B, C, -1).transpose(1, 0, 2)).reshape(C, -1)


def _store_batch_major(a2, out):
    """a2 (C, B * L) -> out (B, C, ...) in place."""
    B, C = out.shape[:2]
    np.copyto(out.reshape(B, C, -1), a2.reshape(C, B, -1).transpose(1, 0, 2))


# --------------------------------------------------------------------------------------------
# The chunk runner
# --------------------------------------------------------------------------------------------

_pool: ThreadPoolExecutor | None = None


def _worker_pool(n):
    global _pool
    if _pool is None or _pool._max_workers < n:
        _pool = ThreadPoolExecutor(n, thread_name_prefix="snnvae-conv")
    return _pool


def _run_chunks(B, per_image, body, partial_shape=None, dtype=None):
    """Calls ``body(b0, b1, serial, partial)`` for every chunk of images (``_image_chunks``);
    ``partial`` is the chunk's own zeroed (partial_shape) array of dtype (or None), returned
    summed over the chunks in chunk order (or None).

    With at least _MIN_CHUNKS_PER_WORKER chunks for each of two or more Numba threads, and where
    the BLAS threads can be set, one worker per thread takes chunks as it finishes them (``serial=True``: serial gathers, one
    BLAS thread); otherwise the chunks run one after the other (``serial=False``)."""
    chunks = _image_chunks(B, per_image)
    partials = (None if partial_shape is None
                else np.zeros((len(chunks), *partial_shape), dtype=dtype))
    workers = min(numba.get_num_threads(), len(chunks) // _MIN_CHUNKS_PER_WORKER)

    def run(k, serial):
        b0, b1 = chunks[k]
        body(b0, b1, serial, None if partials is None else partials[k])

    if _WORKERS and workers > 1 and blas_threads.available():
        order, lock = iter(range(len(chunks))), threading.Lock()

        def work():
            while True:
                with lock:
                    k = next(order, None)
                if k is None:
                    return
                run(k, True)
        with blas_threads.single_threaded():
            futures = [_worker_pool(workers).submit(work) for _ in range(workers)]
            for future in futures:
                future.result()
    else:
        for k in range(len(chunks)):
            run(k, False)
    return None if partials is None else partials.sum(axis=0)


# --------------------------------------------------------------------------------------------
# The four dense operations (same arguments as in numpy_ref)
# --------------------------------------------------------------------------------------------


def conv2d_forward(x, w, b, stride, padding):
    B, C_in, H, W = x.shape
    C_out, _, kh, kw = w.shape
    Ho, Wo = conv_out_size(H, kh, stride, padding), conv_out_size(W, kw, stride, padding)
    w2 = w.reshape(C_out, -1)
    y = np.empty((B, C_out, Ho, Wo), dtype=np.result_type(x, w))

    def chunk(b0, b1, serial, _):
        y2 = w2 @ im2col(x[b0:b1], kh, kw, stride, padding, Ho, Wo, serial)
        if b is not None:
            y2 += b[:, None]
        _store_batch_major(y2, y[b0:b1])
    _run_chunks(B, w2.shape[1] * Ho * Wo, chunk)
    return y


def conv2d_backward(gy, x, w, stride, padding, has_bias):
    B, C_in, H, W = x.shape
    C_out, _, kh, kw = w.shape
    Ho, Wo = gy.shape[2:]
    w2 = w.reshape(C_out, -1)
    gx = np.empty_like(x)
    zero = np.zeros(C_in, dtype=x.dtype)

    def chunk(b0, b1, serial, gw):
        g2 = _to_channel_major(gy[b0:b1])
        np.matmul(g2, im2col(x[b0:b1], kh, kw, stride, padding, Ho, Wo, serial).T, out=gw)
        _col2im_into(w2.T @ g2, gx[b0:b1], zero, kh, kw, stride, padding, Ho, Wo, serial)
    gw = _run_chunks(B, w2.shape[1] * Ho * Wo, chunk, w2.shape, w2.dtype)
    gb = gy.sum(axis=(0, 2, 3)) if has_bias else None
    return gx, gw.reshape(w.shape), gb


def conv_transpose2d_forward(x, w, b, stride, padding, output_padding):
    B, C_in, H, W = x.shape
    _, C_out, kh, kw = w.shape
    Ho = conv_transpose_out_size(H, kh, stride, padding, output_padding)
    Wo = conv_transpose_out_size(W, kw, stride, padding, output_padding)
    y = np.empty((B, C_out, Ho, Wo), dtype=np.result_type(x, w))
    init = scatter.bias_init(b, C_out, y.dtype)
    wt = w.reshape(C_in, -1).T

    def chunk(b0, b1, serial, _):
        cols = wt @ _to_channel_major(x[b0:b1])
        _col2im_into(cols, y[b0:b1], init, kh, kw, stride, padding, H, W, serial)
    _run_chunks(B, wt.shape[0] * H * W, chunk)
    return y


def conv_transpose2d_backward(gy, x, w, stride, padding, has_bias):
    B, C_in, H, W = x.shape
    _, C_out, kh, kw = w.shape
    w2 = w.reshape(C_in, -1)
    gx = np.empty_like(x)

    def chunk(b0, b1, serial, gw):
        gcols = im2col(gy[b0:b1], kh, kw, stride, padding, H, W, serial)
        _store_batch_major(w2 @ gcols, gx[b0:b1])
        np.matmul(_to_channel_major(x[b0:b1]), gcols.T, out=gw)
    gw = _run_chunks(B, w2.shape[1] * H * W, chunk, w2.shape, w2.dtype)
    gb = gy.sum(axis=(0, 2, 3)) if has_bias else None
    return gx, gw.reshape(w.shape), gb
