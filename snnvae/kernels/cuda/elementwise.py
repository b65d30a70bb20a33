"""Elementwise kernels of ``DeviceArray``: maps (unary operations, casts, strided copies), binary
operations with broadcasting, and ``where``.

Arrays reach these kernels flat (1-D, contiguous) together with a *layout* over an index space
``shape`` (d <= 8 dimensions): an element offset and one element stride per dimension, so that
the element with multi-index (i_0, ..., i_{d-1}) sits at

    position = offset + sum_k i_k stride_k.

A stride of 0 repeats one element along its dimension (broadcasting), a permuted stride tuple
reads a transposed array and a stride of ``step * stride`` a sliced one, all without copying.
The three kernels are

    map     dst[dst layout(i)] = f_op(src[src layout(i)])   or f_op(scalar), for every i in shape
    binary  out[i] = g_op(a[a layout(i)], b[b layout(i)])   a or b may be a scalar; out is
                                                            contiguous of shape ``shape``
    where   out[i] = x[x layout(i)] if cond[cond layout(i)] != 0 else y[y layout(i)]

``map`` alone is the strided copy of the array layer: with ``op = COPY`` it gathers a slice or a
transpose into a contiguous array (src strided, dst contiguous), writes a value into a selection
(``__setitem__``, src contiguous or broadcast, dst strided), fills (a scalar source), casts
(dst of another dtype) and copies each piece of a concatenation into its region of the result.

Thread mapping (all three): a grid-stride loop over the flat row-major index i of ``shape``;
thread t of n takes i = t, t + n, t + 2n, ... and splits i into its multi-index (``_offset``,
``_offsets2``, ``_offsets3``: one division per dimension) to find its elements. Consecutive
threads take consecutive i, which are consecutive elements of the contiguous output (of binary
and where, of map into a contiguous dst), so the writes of a warp are coalesced; a setitem or
concatenation writes consecutive elements of each row of its region. Reads are coalesced
where the source's last stride is 1, hit one cached address where it is 0, and are strided for
a transposed source (the price of materialising a transpose).

Computation dtype: each kernel is compiled per *computation dtype* (``map_kernel(dtype)``
and friends, cached): the operands are converted to it in registers (bool is computed as int8,
nonzero as 1) and the result is cast to the output's dtype on the store (nonzero as True for
bool), so a float32 array with a float64 one computes in float64 without a cast pass over the
float32 array first. Scalars are cast to the computation dtype on the host by the caller
(``register_scalar``): a bare Python float in a kernel is a float64 and would promote float32
arithmetic.

Before a launch the host merges dimensions that every operand walks contiguously (``collapse``):
a contiguous operation on arrays of the same shape runs over one dimension. Empty index spaces
launch nothing.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda, from_dtype, types

from . import launch

MAX_DIMS = 8

# Operation codes of the map kernel: f_op(x).
COPY, NEGATIVE, SQUARE, SQRT, EXP, LOG, TANH, ABSOLUTE, SIGN, LOGICAL_NOT = range(10)
# Operation codes of the binary kernel: g_op(x, y).
(ADD, SUBTRACT, MULTIPLY, DIVIDE, POWER, MAXIMUM, MINIMUM, GREATER, GREATER_EQUAL, LESS,
 LESS_EQUAL, EQUAL, NOT_EQUAL, LOGICAL_AND, LOGICAL_OR) = range(15)

# exp(x) overflows the float64 range above this; Python's math.exp (the simulator) raises there
# where CUDA returns inf, so the kernel stores inf itself.
_EXP_OVERFLOW = 709.78


# --------------------------------------------------------------------------------------------
# Layouts (host side)
# --------------------------------------------------------------------------------------------


def c_strides(shape):
    """Element strides of a C-contiguous array of ``shape``."""
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def broadcast_strides(shape, target):
    """Element strides that read a C-contiguous array of ``shape`` as one of the broadcast shape
    ``target``: missing leading dimensions and dimensions of size 1 get stride 0."""
    own = c_strides(shape)
    lead = len(target) - len(shape)
    return (0,) * lead + tuple(0 if n == 1 else s for n, s in zip(shape, own))


def collapse(shape, *layouts):
    """Drop dimensions of size 1 and merge neighbours that every layout (a stride tuple over
    ``shape``) walks as one: dimension k joins k + 1 when stride_k = stride_{k+1} n_{k+1} for
    all. Returns (shape, *layouts) over at least one dimension; the row-major order of the
    index space, and so the position of every element, is unchanged."""
    if len(shape) > MAX_DIMS:
        raise ValueError(f"DeviceArray supports at most {MAX_DIMS} dimensions, got {len(shape)}")
    dims = [(n, [s[k] for s in layouts]) for k, n in enumerate(shape) if n != 1]
    merged = []
    for n, strides in dims:
        if merged:
            prev_n, prev = merged[-1]
            if all(p == s * n for p, s in zip(prev, strides)):
                merged[-1] = (prev_n * n, strides)
                continue
        merged.append((n, strides))
    if not merged:
        merged = [(1, [0] * len(layouts))]
    out_shape = tuple(n for n, _ in merged)
    return (out_shape,) + tuple(tuple(strides[j] for _, strides in merged)
                                for j in range(len(layouts)))


def register_type(dtype):
    """The numba type a kernel computes in for ``dtype``: its own, int8 for bool."""
    dtype = np.dtype(dtype)
    return types.int8 if dtype == np.bool_ else from_dtype(dtype)


@cuda.jit(device=True)
def _truth(x):
    """x != 0 as the int8 a bool is computed in."""
    return types.int8(1) if x != 0 else types.int8(0)


def register_convert(dtype):
    """What converts a value to the computation type of ``dtype`` in a kernel: the numba type,
    or for bool ``_truth`` (nonzero -> 1; an int8 cast would truncate 0.5 to 0)."""
    return _truth if np.dtype(dtype) == np.bool_ else register_type(dtype)


def register_scalar(dtype, value):
    """``value`` as a scalar of the computation type of ``dtype`` (a kernel argument)."""
    dtype = np.dtype(dtype)
    return np.int8(bool(value)) if dtype == np.bool_ else dtype.type(value)


# --------------------------------------------------------------------------------------------
# Index arithmetic (device functions without ``cuda.*``: other modules' kernels call them)
# --------------------------------------------------------------------------------------------


@cuda.jit(device=True)
def _offset(i, shape, strides):
    """The flat row-major index i of ``shape`` -> its position sum_k i_k strides[k]."""
    p = 0
    for k in range(len(shape) - 1, -1, -1):
        q = i // shape[k]
        p += (i - q * shape[k]) * strides[k]
        i = q
    return p


@cuda.jit(device=True)
def _offsets2(i, shape, strides_a, strides_b):
    """The flat row-major index i of ``shape`` -> sum_k i_k strides_a[k], sum_k i_k strides_b[k]."""
    pa = 0
    pb = 0
    for k in range(len(shape) - 1, -1, -1):
        q = i // shape[k]
        c = i - q * shape[k]
        pa += c * strides_a[k]
        pb += c * strides_b[k]
        i = q
    return pa, pb


@cuda.jit(device=True)
def _offsets3(i, shape, strides_a, strides_b, strides_c):
    """``_offsets2`` for three layouts."""
    pa = 0
    pb = 0
    pc = 0
    for k in range(len(shape) - 1, -1, -1):
        q = i // shape[k]
        c = i - q * shape[k]
        pa += c * strides_a[k]
        pb += c * strides_b[k]
        pc += c * strides_c[k]
        i = q
    return pa, pb, pc


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def map_kernel(dtype):
    """``kernel(op, src, src_offset, src_strides, scalar, from_scalar, dst, dst_offset,
    dst_strides, shape, size)`` computing in ``dtype`` (see the module docstring)."""
    ct = register_type(dtype)
    convert = register_convert(dtype)

    @cuda.jit
    def kernel(op, src, src_offset, src_strides, scalar, from_scalar, dst, dst_offset,
               dst_strides, shape, size):
        """dst[dst_offset + layout_dst(i)] = f_op(x), x = src[src_offset + layout_src(i)]
        (converted to the computation type) or ``scalar``, for the ``size`` flat indices i of
        ``shape``; src and dst flat. Thread t takes i = t, t + n_threads, ...: consecutive
        threads take consecutive i, adjacent in dst along its last dimension (coalesced
        writes) and in src where its last stride is 1 (coalesced reads)."""
        zero = ct(0)
        one = ct(1)
        for i in range(cuda.grid(1), size, cuda.gridsize(1)):
            s, d = _offsets2(i, shape, src_strides, dst_strides)
            x = scalar if from_scalar else convert(src[src_offset + s])
            d += dst_offset
            if op == COPY:
                dst[d] = x
            elif op == NEGATIVE:
                dst[d] = -x
            elif op == SQUARE:
                dst[d] = x * x
            elif op == SQRT:
                if x >= zero:
                    dst[d] = math.sqrt(x)
                else:
                    dst[d] = math.nan
            elif op == EXP:
                if x > _EXP_OVERFLOW:
                    dst[d] = math.inf
                else:
                    dst[d] = math.exp(x)
            elif op == LOG:
                if x > zero:
                    dst[d] = math.log(x)
                elif x == zero:
                    dst[d] = -math.inf
                else:
                    dst[d] = math.nan
            elif op == TANH:
                dst[d] = math.tanh(x)
            elif op == ABSOLUTE:
                dst[d] = abs(x)
            elif op == SIGN:
                if x > zero:
                    dst[d] = one
                elif x < zero:
                    dst[d] = -one
                else:
                    dst[d] = x          # 0 stays 0, NaN stays NaN
            elif op == LOGICAL_NOT:
                dst[d] = x == zero

    return kernel


@functools.lru_cache(maxsize=None)
def binary_kernel(dtype):
    """``kernel(op, a, a_strides, a_scalar, a_is_scalar, b, b_strides, b_scalar, b_is_scalar,
    out, shape, size)`` computing in ``dtype`` (see the module docstring)."""
    ct = register_type(dtype)
    convert = register_convert(dtype)

    @cuda.jit
    def kernel(op, a, a_strides, a_scalar, a_is_scalar, b, b_strides, b_scalar, b_is_scalar,
               out, shape, size):
        """out[i] = g_op(x, y) for the ``size`` flat indices i of ``shape`` (out contiguous,
        a and b flat), x = a[layout_a(i)] or ``a_scalar``, y likewise; maximum and minimum
        propagate NaN as NumPy does. Thread t takes i = t, t + n_threads, ...: consecutive
        threads write consecutive elements of out (coalesced) and read consecutive elements
        of an operand of the same shape, or one element of a broadcast one."""
        zero = ct(0)
        for i in range(cuda.grid(1), size, cuda.gridsize(1)):
            pa, pb = _offsets2(i, shape, a_strides, b_strides)
            x = a_scalar if a_is_scalar else convert(a[pa])
            y = b_scalar if b_is_scalar else convert(b[pb])
            if op == ADD:
                out[i] = x + y
            elif op == SUBTRACT:
                out[i] = x - y
            elif op == MULTIPLY:
                out[i] = x * y
            elif op == DIVIDE:
                out[i] = x / y
            elif op == POWER:
                out[i] = x ** y
            elif op == MAXIMUM:
                out[i] = x if x > y or x != x else y
            elif op == MINIMUM:
                out[i] = x if x < y or x != x else y
            elif op == GREATER:
                out[i] = x > y
            elif op == GREATER_EQUAL:
                out[i] = x >= y
            elif op == LESS:
                out[i] = x < y
            elif op == LESS_EQUAL:
                out[i] = x <= y
            elif op == EQUAL:
                out[i] = x == y
            elif op == NOT_EQUAL:
                out[i] = x != y
            elif op == LOGICAL_AND:
                out[i] = x != zero and y != zero
            elif op == LOGICAL_OR:
                out[i] = x != zero or y != zero

    return kernel


@functools.lru_cache(maxsize=None)
def where_kernel(dtype):
    """``kernel(cond, cond_strides, x, x_strides, x_scalar, x_is_scalar, y, y_strides,
    y_scalar, y_is_scalar, out, shape, size)`` computing in ``dtype``."""
    convert = register_convert(dtype)

    @cuda.jit
    def kernel(cond, cond_strides, x, x_strides, x_scalar, x_is_scalar, y, y_strides,
               y_scalar, y_is_scalar, out, shape, size):
        """out[i] = x[layout_x(i)] if cond[layout_cond(i)] != 0 else y[layout_y(i)] (x or y may
        be a scalar) for the ``size`` flat indices i of ``shape`` (out contiguous, the others
        flat). Thread t takes i = t, t + n_threads, ...: consecutive threads write consecutive
        elements of out (coalesced) and read consecutive elements of same-shape operands."""
        for i in range(cuda.grid(1), size, cuda.gridsize(1)):
            pc, px, py = _offsets3(i, shape, cond_strides, x_strides, y_strides)
            if cond[pc] != 0:
                out[i] = x_scalar if x_is_scalar else convert(x[px])
            else:
                out[i] = y_scalar if y_is_scalar else convert(y[py])

    return kernel


# --------------------------------------------------------------------------------------------
# Launches. Arrays are flat device arrays; an operand that is not a device array is a scalar.
# --------------------------------------------------------------------------------------------


def _size(shape):
    return math.prod(shape)


def _operand(x, strides, dtype, dummy):
    """(array, strides, scalar, is_scalar) of a kernel operand: a flat device array with its
    layout, or a scalar cast to the computation dtype (the array slot then holds ``dummy``)."""
    if launch.is_device_array(x):
        return x, strides, register_scalar(dtype, 0), False
    return dummy, strides, register_scalar(dtype, x), True


def launch_map(op, dtype, shape, dst, dst_offset, dst_strides, src=None, src_offset=0,
               src_strides=None, scalar=None):
    """dst[dst layout] = f_op(src[src layout]) over ``shape``, computed in ``dtype``; without
    ``src``, f_op(scalar) everywhere (a fill)."""
    size = _size(shape)
    if size == 0:
        return
    from_scalar = src is None
    if from_scalar:
        src, src_strides = dst, (0,) * len(shape)
    shape, src_strides, dst_strides = collapse(shape, src_strides, dst_strides)
    value = register_scalar(dtype, 0 if scalar is None else scalar)
    map_kernel(np.dtype(dtype))[launch.grid_1d(size)](
        op, src, src_offset, src_strides, value, from_scalar, dst, dst_offset, dst_strides,
        shape, size)


def launch_binary(op, dtype, shape, out, a, a_strides, b, b_strides):
    """out (contiguous, ``shape``) = g_op(a, b), each a flat device array read with its stride
    tuple, or a scalar; computed in ``dtype``."""
    size = _size(shape)
    if size == 0:
        return
    shape, a_strides, b_strides, _ = collapse(shape, a_strides, b_strides, c_strides(shape))
    a_args = _operand(a, a_strides, dtype, out)
    b_args = _operand(b, b_strides, dtype, out)
    binary_kernel(np.dtype(dtype))[launch.grid_1d(size)](op, *a_args, *b_args, out, shape, size)


def launch_where(dtype, shape, out, cond, cond_strides, x, x_strides, y, y_strides):
    """out (contiguous, ``shape``) = x where cond else y; cond a flat device array, x and y
    flat device arrays or scalars, each with its stride tuple; x and y read in ``dtype``."""
    size = _size(shape)
    if size == 0:
        return
    shape, cond_strides, x_strides, y_strides, _ = collapse(
        shape, cond_strides, x_strides, y_strides, c_strides(shape))
    x_args = _operand(x, x_strides, dtype, out)
    y_args = _operand(y, y_strides, dtype, out)
    where_kernel(np.dtype(dtype))[launch.grid_1d(size)](cond, cond_strides, *x_args, *y_args,
                                                        out, shape, size)
