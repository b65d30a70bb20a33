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

The kernels (``reduce.reduce_kernels``) live beside the tree they call, in ``reduce.py``; this
module plans the launch.
"""
from __future__ import annotations

import math

import numpy as np

from . import launch
from .elementwise import collapse
from .reduce import MAX, SUM, reduce_kernels

# Reductions of at least this many elements per output use a block per output.
BLOCK_REDUCTION_MIN = launch.THREADS_PER_BLOCK


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
        block_kernel[max(1, min(n_out, launch.MAX_BLOCKS)), launch.THREADS_PER_BLOCK](*args)
    else:
        thread_kernel[launch.grid_1d(n_out)](*args)
