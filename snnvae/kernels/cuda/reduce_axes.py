"""Reductions of ``DeviceArray`` over any set of axes: sum, mean, max, min.

An array x with its axes split into kept ones (index o, the output element) and reduced ones
(index r) is read through two layouts (``elementwise``: element strides over each group):

    sum    out[o] = sum_r x[base(o) + red(r)]        mean  out[o] = sum / n_red
    max    out[o] = max_r x[...]                     min   out[o] = min_r x[...]

with base(o) = sum_k o_k kept_stride_k and red(r) = sum_k r_k red_stride_k. Max and min
propagate NaN, as NumPy does. Everything accumulates in float64 (float arrays, and any mean)
or in int64 (bool and integer arrays) and is rounded to the output's dtype when stored: a
float32 sum is thereby exact to float32 rounding even over millions of values, at the price of
float64 adds (the kernels are bound by reading memory). The order of the additions is fixed by
the shape and the launch size alone, so results are deterministic.

Two thread mappings, chosen by the number of reduced elements per output:

- ``block`` (n_red >= THREADS_PER_BLOCK): one block per output element (blocks stride over the
  outputs); thread k of the block reads the reduced elements r = k, k + blockDim, ... and
  accumulates in a register, then the block combines its threads' values with a shared-memory
  tree (``_block_combine``, as ``reduce.py``). Consecutive threads read consecutive r, which
  are adjacent in memory when the last reduced axis is the last axis of x (coalesced); else
  they are a row apart.
- ``thread`` (fewer reduced elements): one thread per output element (grid-stride over o),
  looping over its n_red elements alone, in order. Consecutive threads own consecutive outputs,
  whose elements are adjacent in memory when the reduced axes lead (a sum over the batch axis,
  say: coalesced reads); no block would be left mostly idle for short reductions.

Every kernel calling ``_block_combine`` lives in this module (the simulator swaps the ``cuda``
module of a device function's own module per call; see ``reduce.py``).
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda, from_dtype

from . import launch
from .elementwise import _offset, collapse

SUM, MAX, MIN = range(3)

_THREADS = launch.THREADS_PER_BLOCK
if _THREADS & (_THREADS - 1):
    raise ImportError("the tree reduction halves the block: THREADS_PER_BLOCK must be a power "
                      "of two")

# Reductions of at least this many elements per output use a block per output.
BLOCK_REDUCTION_MIN = _THREADS


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


def _identity(op, acc_dtype):
    acc_dtype = np.dtype(acc_dtype)
    if op == SUM:
        return acc_dtype.type(0)
    if acc_dtype.kind == "f":
        return acc_dtype.type(-math.inf if op == MAX else math.inf)
    info = np.iinfo(acc_dtype)
    return acc_dtype.type(info.min if op == MAX else info.max)


def launch_reduce(op, x, shape, axes, out, mean=False):
    """out (flat, one element per kept index, in row-major order of the kept axes) = the
    reduction of the contiguous flat x of ``shape`` over ``axes`` (a tuple of distinct
    non-negative axes). There must be at least one reduced element (``mean`` divides by their
    number); the caller handles empty reductions."""
    strides = [1] * len(shape)
    for k in range(len(shape) - 2, -1, -1):
        strides[k] = strides[k + 1] * shape[k + 1]
    kept = [k for k in range(len(shape)) if k not in axes]
    red = sorted(axes)
    kept_shape, kept_strides = collapse(tuple(shape[k] for k in kept),
                                        tuple(strides[k] for k in kept))
    red_shape, red_strides = collapse(tuple(shape[k] for k in red),
                                      tuple(strides[k] for k in red))
    n_out, n_red = math.prod(shape[k] for k in kept), math.prod(shape[k] for k in red)
    if n_out == 0:
        return
    if n_red == 0:
        raise ValueError("launch_reduce: nothing to reduce")
    float_acc = mean or x.dtype.kind == "f" or out.dtype.kind == "f"
    acc_dtype = np.dtype(np.float64 if float_acc else np.int64)
    block_kernel, thread_kernel = reduce_kernels(acc_dtype)
    args = (op, x, kept_shape, kept_strides, red_shape, red_strides, n_out, n_red,
            _identity(op, acc_dtype), bool(mean), out)
    if n_red >= BLOCK_REDUCTION_MIN:
        block_kernel[max(1, min(n_out, launch.MAX_BLOCKS)), _THREADS](*args)
    else:
        thread_kernel[launch.grid_1d(n_out)](*args)
