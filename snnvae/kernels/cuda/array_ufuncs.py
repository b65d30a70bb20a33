"""The ufunc side of ``DeviceArray`` (NEP 13 ``__array_ufunc__``): elementwise ufuncs, their
``reduce`` method, matmul and the reductions behind ``sum``, ``mean``, ``max``, ``min``.

    unary     negative positive square sqrt exp log tanh absolute sign logical_not
                  -> elementwise.map_kernel          out[i] = f(x[i])
    binary    add subtract multiply true_divide power maximum minimum greater greater_equal
              less less_equal equal not_equal logical_and logical_or
                  -> elementwise.binary_kernel       out[i] = g(a[i], b[i]), broadcast
    matmul    (..., M, K) @ (..., K, N) -> (..., M, N), batch dimensions broadcast
                  -> gemm.gemm_into (shared-memory tiles)
    reduce    add (sum), maximum, minimum over any axes  -> reduce_axes.launch_reduce

Calls take DeviceArrays, Python and NumPy scalars and host arrays (copied over), and an
optional ``out=`` DeviceArray the result broadcasts to. Types come from NumPy's own
resolution, ``ufunc.resolve_dtypes`` (NEP 50: Python scalars are weak), so results have the
dtypes NumPy 2 gives; a loop NumPy does not have raises NumPy's error, and one in a dtype the
device does not support (float16 for ``np.exp`` of bool, say) a TypeError. Any other ufunc or
method raises a TypeError naming it.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.array_utils import normalize_axis_tuple

from . import elementwise as ew
from . import gemm
from .array import (DeviceArray, _as_array, _broadcast_shape, _operand, _output, _overlap,
                    _unaliased, _view)
from .reduce import MAX, MIN, SUM
from .reduce_axes import launch_reduce

_UNARY = {np.negative: ew.NEGATIVE, np.positive: ew.COPY, np.square: ew.SQUARE,
          np.sqrt: ew.SQRT, np.exp: ew.EXP, np.log: ew.LOG, np.tanh: ew.TANH,
          np.absolute: ew.ABSOLUTE, np.sign: ew.SIGN, np.logical_not: ew.LOGICAL_NOT}
_BINARY = {np.add: ew.ADD, np.subtract: ew.SUBTRACT, np.multiply: ew.MULTIPLY,
           np.true_divide: ew.DIVIDE, np.power: ew.POWER, np.maximum: ew.MAXIMUM,
           np.minimum: ew.MINIMUM, np.greater: ew.GREATER, np.greater_equal: ew.GREATER_EQUAL,
           np.less: ew.LESS, np.less_equal: ew.LESS_EQUAL, np.equal: ew.EQUAL,
           np.not_equal: ew.NOT_EQUAL, np.logical_and: ew.LOGICAL_AND,
           np.logical_or: ew.LOGICAL_OR}
_REDUCE_UFUNCS = {np.add: (SUM, "add"), np.maximum: (MAX, "maximum"),
                  np.minimum: (MIN, "minimum")}


def dispatch(ufunc, method, inputs, kwargs):
    """``DeviceArray.__array_ufunc__``: run ``ufunc.method(*inputs, **kwargs)`` on the device."""
    name = ufunc.__name__
    if method == "reduce" and ufunc in _REDUCE_UFUNCS:
        return _ufunc_reduce(ufunc, *inputs, **kwargs)
    if method != "__call__" or not (ufunc in _UNARY or ufunc in _BINARY or ufunc is np.matmul):
        what = f"np.{name}" if method == "__call__" else f"np.{name}.{method}"
        raise TypeError(f"{what} is not implemented for DeviceArray")
    out = kwargs.pop("out", None)
    if kwargs:
        raise TypeError(f"np.{name}: arguments {sorted(kwargs)} are not implemented for "
                        f"DeviceArray (only out=)")
    if ufunc is np.matmul:
        return matmul(*inputs, out=out)
    if ufunc in _UNARY:
        return _apply_unary(ufunc, *inputs, out=out)
    return _apply_binary(ufunc, *inputs, out=out)


def _spec(x):
    """What ``ufunc.resolve_dtypes`` takes for an operand: a dtype, or the Python type of a
    weak Python scalar (NEP 50)."""
    if isinstance(x, DeviceArray):
        return x.dtype
    if isinstance(x, np.generic):
        return x.dtype
    if isinstance(x, bool):
        return np.dtype(np.bool_)
    return int if isinstance(x, int) else float


def _shape_of(x):
    return x.shape if isinstance(x, DeviceArray) else ()


def _resolve(ufunc, *operands):
    """(computation dtype, output dtype) of ``ufunc`` on the operands (NumPy's own resolution:
    NEP 50 rules, its errors for dtypes it has no loop for)."""
    dtypes = ufunc.resolve_dtypes(tuple(_spec(x) for x in operands) + (None,))
    compute = np.result_type(*dtypes[:-1])
    for dtype in (compute, dtypes[-1]):
        if dtype.kind not in "biu" and dtype not in (np.float32, np.float64):
            raise TypeError(f"np.{ufunc.__name__} would compute in {dtype} here, which the "
                            f"device does not support: cast to float32 or float64 first")
    return compute, dtypes[-1]


def _kernel_operand(x, out):
    """(flat device array or scalar, strides over out's shape) of a kernel operand."""
    if isinstance(x, DeviceArray):
        x = _unaliased(x, out)
        return x._flat(), ew.broadcast_strides(x.shape, out.shape)
    return x, (0,) * out.ndim


def _apply_unary(ufunc, x, out=None):
    x = _as_array(x)
    compute, dtype = _resolve(ufunc, x)
    result = _output(out, x.shape, dtype, ufunc.__name__)
    src, strides = _kernel_operand(x, result)
    ew.launch_map(_UNARY[ufunc], compute, result.shape, result._flat(), 0,
                  ew.c_strides(result.shape), src=src, src_strides=strides)
    return result


def _apply_binary(ufunc, a, b, out=None):
    a, b = _operand(a), _operand(b)
    compute, dtype = _resolve(ufunc, a, b)
    shape = _broadcast_shape(_shape_of(a), _shape_of(b))
    result = _output(out, shape, dtype, ufunc.__name__)
    a, a_strides = _kernel_operand(a, result)
    b, b_strides = _kernel_operand(b, result)
    ew.launch_binary(_BINARY[ufunc], compute, result.shape, result._flat(), a, a_strides, b,
                     b_strides)
    return result


def _batched(x, batch, dtype):
    """x (..., R, C) as a (Z, R, C) or, when its batch has one element, (1, R, C) device array
    for the batched product with batch shape ``batch`` (materialised where x broadcasts)."""
    x = x.astype(dtype, copy=False)
    core = x.shape[-2:]
    if math.prod(x.shape[:-2]) == 1:
        return _view(x._dev, 0, (1,) + core)
    if (1,) * (len(batch) - x.ndim + 2) + x.shape[:-2] != batch:
        x = x._select(0, batch + core, ew.broadcast_strides(x.shape, batch + core))
    return _view(x._dev, 0, (math.prod(batch),) + core)


def matmul(a, b, out=None):
    """NumPy's matmul for 2-D and batched N-D operands (batch dimensions broadcast), with the
    shared-memory tiled product of ``gemm.py``."""
    a, b = _as_array(a), _as_array(b)
    if a.ndim < 2 or b.ndim < 2:
        raise NotImplementedError("matmul of 1-D operands is not implemented on the device: "
                                  "reshape the vector to a (1, n) or (n, 1) matrix")
    dtype = np.result_type(a.dtype, b.dtype)
    if dtype == np.bool_:
        raise TypeError("matmul of bool arrays is not implemented on the device")
    (M, K), (K_b, N) = a.shape[-2:], b.shape[-2:]
    if K != K_b:
        raise ValueError(f"matmul: Input operand 1 has a mismatch in its core dimension 0, with "
                         f"gufunc signature (n?,k),(k,m?)->(n?,m?) (size {K_b} is different "
                         f"from {K})")
    batch = _broadcast_shape(a.shape[:-2], b.shape[:-2])
    result = _output(out, batch + (M, N), dtype, "matmul", broadcast=False)
    a, b = (x.copy() if _overlap(x, result) else x for x in (a, b))
    Z = math.prod(batch)
    gemm.gemm_into(_view(result._dev, 0, (Z, M, N)), _batched(a, batch, dtype),
                   _batched(b, batch, dtype))
    return result


def reduce(x, op, name, axis, keepdims, dtype, out, mean=False):
    """The reduction ``op`` of DeviceArray x over ``axis`` (None, int or tuple), cast to
    ``dtype`` (see ``reduce_axes.py``)."""
    x = _as_array(x)
    axes = tuple(range(x.ndim)) if axis is None else normalize_axis_tuple(axis, x.ndim)
    shape = tuple((1 if k in axes else n) for k, n in enumerate(x.shape) if keepdims or
                  k not in axes)
    result = _output(out, shape, dtype, name, broadcast=False)
    if result.size == 0:
        return result
    if math.prod(x.shape[k] for k in axes) == 0:
        if op != SUM:
            raise ValueError(f"zero-size array to reduction operation {name} which has no "
                             f"identity")
        result.fill(math.nan if mean else 0)
        return result
    launch_reduce(op, x._flat(), x.shape, axes, result._flat(), mean=mean)
    return result


def _ufunc_reduce(ufunc, x, axis=0, dtype=None, out=None, keepdims=False, **kwargs):
    """``np.add.reduce``, ``np.maximum.reduce``, ``np.minimum.reduce``."""
    op, name = _REDUCE_UFUNCS[ufunc]
    if kwargs:
        raise TypeError(f"np.{name}.reduce: arguments {sorted(kwargs)} are not implemented for "
                        f"DeviceArray")
    x = _as_array(x)
    if op == SUM:
        return x.sum(axis=axis, dtype=dtype, out=out, keepdims=keepdims)
    if dtype is not None and np.dtype(dtype) != x.dtype:
        x = x.astype(dtype)
    return reduce(x, op, name, axis, keepdims, x.dtype, out)
