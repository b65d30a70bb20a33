"""Gather and scatter-add along one axis: ``np.take_along_axis`` and its adjoint.

With ``axis`` a of arrays of the same number of dimensions, and m a multi-index over the other
axes,

    take     out[m, i] = x[m, index[m, i]]                     out has index's shape (after
                                                               broadcasting the other axes)
    add at   target[m, index[m, i]] += values[m, i]            for every i, in order of i

Negative indices count from the end of the axis (as NumPy's). An index still outside the axis
is not checked on the device (that would need a read back to the host): ``take`` stores 0 for
it and ``add at`` skips it; ``DeviceArray`` checks host indices before copying them over.

Thread mapping:

- take: grid-stride loop over the flat row-major index of out; thread t takes elements t,
  t + n_threads, ..., splitting each into its multi-index (``_offsets2``) for the positions in
  index and (without axis a) in x. Consecutive threads write consecutive elements of out and
  read consecutive indices (coalesced); the gathered x values are wherever the indices point.
- add at: one thread per *line* m (all axes but a; grid-stride over the lines), which walks
  i = 0, 1, ..., K - 1 of its line and adds values[m, i] into target[m, index[m, i]]. No other
  thread touches line m of target, so repeated indices accumulate without atomics and in a
  fixed order: the result is deterministic. Consecutive threads own consecutive lines, which
  are adjacent in memory when a is not the last axis (coalesced); along the last axis they
  are a row apart.
"""
from __future__ import annotations

import math

from numba import cuda

from . import launch
from .elementwise import _offsets2, _offsets3, collapse


@cuda.jit
def _take_kernel(x, x_strides, x_axis_stride, n_axis, index, index_strides, out, shape, size):
    """out[i] = x[base(i) + j x_axis_stride] with j = index[layout(i)] (negative j counts from
    the end, j outside [0, n_axis) gives 0); base(i) is the position of the other axes of
    element i in x (its axis-a stride is 0 in ``x_strides``). Thread t takes i = t,
    t + n_threads, ...: consecutive threads, consecutive elements of out."""
    for i in range(cuda.grid(1), size, cuda.gridsize(1)):
        base, at = _offsets2(i, shape, x_strides, index_strides)
        j = index[at]
        if j < 0:
            j += n_axis
        if 0 <= j < n_axis:
            out[i] = x[base + j * x_axis_stride]
        else:
            out[i] = 0


@cuda.jit
def _add_at_kernel(target, target_strides, target_axis_stride, n_axis, index, index_strides,
                   index_axis_stride, values, values_strides, values_axis_stride, count,
                   lines_shape, n_lines):
    """For every line m of ``lines_shape`` (the axes but a) and i = 0 .. count - 1:
    target[t(m) + j target_axis_stride] += values[v(m) + i values_axis_stride], where
    j = index[x(m) + i index_axis_stride] (negative j counts from the end, j outside [0, n_axis)
    is skipped). Thread -> line m (grid-stride over n_lines); it alone writes that line of
    target, so duplicates in index add up in order of i, without atomics."""
    for line in range(cuda.grid(1), n_lines, cuda.gridsize(1)):
        t, x, v = _offsets3(line, lines_shape, target_strides, index_strides, values_strides)
        for i in range(count):
            j = index[x + i * index_axis_stride]
            if j < 0:
                j += n_axis
            if 0 <= j < n_axis:
                target[t + j * target_axis_stride] += values[v + i * values_axis_stride]


def launch_take(out, shape, x, x_strides, x_axis_stride, n_axis, index, index_strides):
    """out (flat, contiguous ``shape``) = x gathered along the axis by index, both flat device
    arrays read through their stride tuples over ``shape`` (x's stride along the axis is 0
    there, given apart as ``x_axis_stride``)."""
    size = math.prod(shape)
    if size == 0:
        return
    shape, x_strides, index_strides = collapse(shape, x_strides, index_strides)
    _take_kernel[launch.grid_1d(size)](x, x_strides, x_axis_stride, n_axis, index,
                                       index_strides, out, shape, size)


def launch_add_at(target, target_layout, index, index_layout, values, values_layout,
                  lines_shape, count, n_axis):
    """target += values scattered along the axis by index, in place. Each ``*_layout`` is
    (strides over ``lines_shape``, stride along the axis) of that flat device array; ``count``
    is the length of index along the axis, ``n_axis`` that of target."""
    n_lines = math.prod(lines_shape)
    if n_lines == 0 or count == 0:
        return
    (target_strides, target_axis_stride), (index_strides, index_axis_stride), \
        (values_strides, values_axis_stride) = target_layout, index_layout, values_layout
    lines_shape, target_strides, index_strides, values_strides = collapse(
        lines_shape, target_strides, index_strides, values_strides)
    _add_at_kernel[launch.grid_1d(n_lines)](
        target, target_strides, target_axis_stride, n_axis, index, index_strides,
        index_axis_stride, values, values_strides, values_axis_stride, count, lines_shape,
        n_lines)
