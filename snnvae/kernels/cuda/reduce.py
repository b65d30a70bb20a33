"""Per-channel sums on the GPU: one block per channel, a shared-memory tree inside the block.

Arrays are viewed as (M, C, S): M rows (time and batch), C channels, S positions; a channel
has n = M*S values. Three reductions use this one pattern:

    channel_sums       total_c = sum over (m, s) of g[m, c, s]        (bias gradients)
    batch_statistics   mean_c, var_c (two passes, var biased), invstd_c = 1/sqrt(var_c + eps)
    gradient_sums      sum(gy), sum(gy xhat) and dL/dgamma = scale sum(gy xhat)   (tdBN)

Thread mapping (all three): block -> channel c, blocks taking channels c, c + gridDim, ...
when there are fewer blocks than channels (the simulator launches one). Thread k of the block
reads the channel's values k, k + blockDim, ... of the n values, value i at row m = i // S,
position s = i % S: consecutive threads read consecutive positions of one row, coalesced in
runs of S (for a dense layer, S = 1, the reads are C elements apart). Each thread adds its
values in a register; the block then adds its threads' partial sums in shared memory
(``_block_combine``, a tree that also takes max and min).

Sums accumulate in float64, in registers and in shared memory, for float32 arrays too. One
kernel then serves both dtypes (a shared array needs its dtype at compile time; the
alternative is a factory of per-dtype kernels), the sums match the CPU kernels (which accumulate
in float64), and a channel of a convolution holds millions of values (T N H W), over which a
float32 sum loses digits. The kernels are bound by reading memory, one float64 add per value
read, so the wider adds cost little; the shared buffer is 8 bytes per thread. Results are
rounded to the arrays' dtype when stored.

The reductions of ``DeviceArray`` over any axes (sum, max, min: ``reduce_kernels``, launched by
``reduce_axes.py``, whose docstring has their thread mapping) use the same tree. Every kernel
that calls ``_block_combine`` lives in this module: the CUDA simulator swaps the ``cuda``
module of a device function's own module per call, which races between simulated threads when
the caller's module differs.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda, float64, from_dtype

from . import launch
from .elementwise import _offset

SUM, MAX, MIN = range(3)

# Size of the shared buffer, fixed when a kernel compiles: every kernel here is launched with
# exactly this many threads per block.
_THREADS = launch.THREADS_PER_BLOCK
if _THREADS & (_THREADS - 1):
    raise ImportError("the tree reduction halves the block: THREADS_PER_BLOCK must be a power "
                      "of two")


def _channel_launch(C):
    """(blocks, threads) of a per-channel reduction: a block per channel, at most MAX_BLOCKS."""
    return max(1, min(C, launch.MAX_BLOCKS)), _THREADS


@cuda.jit(device=True)
def _combine(op, acc, x):
    """acc + x, max(acc, x) or min(acc, x); a NaN on either side wins max and min."""
    if op == SUM:
        return acc + x
    if op == MAX:
        return x if x > acc or x != x else acc
    return x if x < acc or x != x else acc


@cuda.jit(device=True)
def _block_combine(op, partial, value):
    """``_combine`` of ``value`` over the threads of the block, returned to every thread.

    partial: shared (blockDim,). Each thread stores its value in its own slot, then the first
    half of the threads combine the second half's slots into theirs, then the first quarter,
    ... (log2(blockDim) steps with a barrier after each) until slot 0 holds the result."""
    tid = cuda.threadIdx.x
    partial[tid] = value
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if tid < half:
            partial[tid] = _combine(op, partial[tid], partial[tid + half])
        cuda.syncthreads()
        half //= 2
    total = partial[0]
    cuda.syncthreads()     # every thread has read slot 0 before the buffer is used again
    return total


@cuda.jit(device=True)
def _thread_channel_sum(a, c, shift, square, tid, nthreads):
    """This thread's float64 share of sum_i (a_i - shift), or of sum_i (a_i - shift)^2 when
    ``square``, over channel c of a (M, C, S): the values i = tid, tid + nthreads, ... of
    n = M*S, value i at row m = i // S, position i % S (consecutive threads read consecutive
    positions of one row)."""
    M, C, S = a.shape
    acc = float64(0.0)
    for i in range(tid, M * S, nthreads):
        m = i // S
        d = a[m, c, i - m * S] - shift
        acc += d * d if square else d
    return acc


@cuda.jit
def _channel_sum_kernel(g, total):
    """g (M, C, S) -> total (C,). Block -> channel, threads stride over its values (see the
    module docstring)."""
    C = g.shape[1]
    partial = cuda.shared.array(_THREADS, float64)
    tid, nthreads = cuda.threadIdx.x, cuda.blockDim.x
    for c in range(cuda.blockIdx.x, C, cuda.gridDim.x):
        sum_c = _block_combine(SUM, partial,
                               _thread_channel_sum(g, c, 0.0, False, tid, nthreads))
        if tid == 0:
            total[c] = sum_c


@cuda.jit
def _channel_statistics_kernel(x, eps, mean, var, invstd):
    """x (M, C, S) -> mean, var, invstd (C,), cast to their dtype on the store.

    Block -> channel c (block-stride over C). Thread k of the block reads the channel's values
    i = k, k + blockDim, ... of n = M*S, value i at row m = i // S, position s = i % S:
    consecutive threads read consecutive positions of one row, coalesced in runs of S (for a
    dense layer, S = 1, the reads are C elements apart). Each thread sums in a float64
    register, shared memory holds the block's partial sums (``_block_combine``). Two passes as
    the reference: the mean, then the squared deviations from it (no cancellation)."""
    M, C, S = x.shape
    n = M * S
    partial = cuda.shared.array(_THREADS, float64)
    tid, nthreads = cuda.threadIdx.x, cuda.blockDim.x
    for c in range(cuda.blockIdx.x, C, cuda.gridDim.x):
        mu = _block_combine(SUM, partial,
                            _thread_channel_sum(x, c, 0.0, False, tid, nthreads)) / n
        v = _block_combine(SUM, partial, _thread_channel_sum(x, c, mu, True, tid, nthreads)) / n
        if tid == 0:
            mean[c] = mu
            var[c] = v
            invstd[c] = 1.0 / math.sqrt(v + eps)



@cuda.jit
def _gradient_sums_kernel(gy, xsrc, mean, invstd, recompute_xhat, scale, sum_gy, sum_gy_xhat,
                          ggamma):
    """gy (M, C, S) -> per channel sum(gy), sum(gy xhat) and dL/dgamma = scale sum(gy xhat).

    xsrc (M, C, S) is xhat itself, or x when ``recompute_xhat`` (the fused backward keeps no
    xhat): then xhat = (x - mean_c) invstd_c, the forward's arithmetic; mean and invstd are
    read only in that case. The mapping of threads is that of ``_channel_statistics_kernel``:
    block -> channel, threads stride over its n values (coalesced in runs of S), float64
    partial sums in registers, then in shared memory."""
    M, C, S = gy.shape
    n = M * S
    partial = cuda.shared.array(_THREADS, float64)
    tid, nthreads = cuda.threadIdx.x, cuda.blockDim.x
    for c in range(cuda.blockIdx.x, C, cuda.gridDim.x):
        acc_gy = float64(0.0)
        acc_gy_xhat = float64(0.0)
        for i in range(tid, n, nthreads):
            m = i // S
            s = i - m * S
            g = gy[m, c, s]
            xhat = (xsrc[m, c, s] - mean[c]) * invstd[c] if recompute_xhat else xsrc[m, c, s]
            acc_gy += g
            acc_gy_xhat += g * xhat
        total_gy = _block_combine(SUM, partial, acc_gy)
        total_gy_xhat = _block_combine(SUM, partial, acc_gy_xhat)
        if tid == 0:
            sum_gy[c] = total_gy
            sum_gy_xhat[c] = total_gy_xhat
            ggamma[c] = scale * total_gy_xhat



def channel_sums(g3):
    """g3 (M, C, S) on the device -> its sums over M and S, (C,) in g3's dtype."""
    total = launch.empty((g3.shape[1],), g3.dtype)
    if g3.shape[1]:
        _channel_sum_kernel[_channel_launch(g3.shape[1])](g3, total)
    return total


def batch_statistics(x3, eps):
    """x3 (M, C, S) -> mean, var, invstd (C,) in x's dtype."""
    C = x3.shape[1]
    mean, var, invstd = (launch.empty((C,), x3.dtype) for _ in range(3))
    _channel_statistics_kernel[_channel_launch(C)](x3, np.float64(eps), mean, var, invstd)
    return mean, var, invstd



def gradient_sums(gy3, xsrc3, mean, invstd, recompute_xhat, scale):
    """-> sum(gy), sum(gy xhat), dL/dgamma per channel, in gy's dtype."""
    C = gy3.shape[1]
    sum_gy, sum_gy_xhat, ggamma = (launch.empty((C,), gy3.dtype) for _ in range(3))
    _gradient_sums_kernel[_channel_launch(C)](gy3, xsrc3, mean, invstd, recompute_xhat,
                                              np.float64(scale), sum_gy, sum_gy_xhat, ggamma)
    return sum_gy, sum_gy_xhat, ggamma


@functools.lru_cache(maxsize=None)
def reduce_kernels(acc_dtype):
    """(block kernel, thread kernel) accumulating in ``acc_dtype`` (float64 or int64), both
    ``kernel(op, x, kept_shape, kept_strides, red_shape, red_strides, n_out, n_red, init,
    mean, out)``; ``init`` is the identity of the operation, ``mean`` divides by n_red."""
    acc_t = from_dtype(np.dtype(acc_dtype))

    @cuda.jit
    def block_kernel(op, x, kept_shape, kept_strides, red_shape, red_strides, n_out, n_red,
                     init, mean, out):
        """Block -> output element o (block-stride over n_out); its thread k accumulates the
        reduced elements r = k, k + blockDim, ... in a register, then the shared-memory tree
        combines the threads' values and thread 0 stores out[o]."""
        partial = cuda.shared.array(_THREADS, acc_t)
        tid, nthreads = cuda.threadIdx.x, cuda.blockDim.x
        for o in range(cuda.blockIdx.x, n_out, cuda.gridDim.x):
            base = _offset(o, kept_shape, kept_strides)
            acc = init
            for r in range(tid, n_red, nthreads):
                acc = _combine(op, acc, acc_t(x[base + _offset(r, red_shape, red_strides)]))
            total = _block_combine(op, partial, acc)
            if tid == 0:
                if mean:
                    out[o] = total / n_red
                else:
                    out[o] = total

    @cuda.jit
    def thread_kernel(op, x, kept_shape, kept_strides, red_shape, red_strides, n_out, n_red,
                      init, mean, out):
        """Thread -> output element o (grid-stride over n_out), adding its n_red elements in
        order in a register: consecutive threads own consecutive outputs."""
        for o in range(cuda.grid(1), n_out, cuda.gridsize(1)):
            base = _offset(o, kept_shape, kept_strides)
            acc = init
            for r in range(n_red):
                acc = _combine(op, acc, acc_t(x[base + _offset(r, red_shape, red_strides)]))
            if mean:
                out[o] = acc / n_red
            else:
                out[o] = acc

    return block_kernel, thread_kernel
