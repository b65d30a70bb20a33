"""The NumPy functions a ``DeviceArray`` answers (NEP 18 ``__array_function__``; NEP 35 ``like=``
for the creation functions), each with the device kernels, results on the device.

    creation      zeros_like ones_like empty_like full_like; with like=a (NEP 35, as NumPy
                  dispatches these on like= only): zeros ones empty full, and asarray array
                  ascontiguousarray (host data copied over; a DeviceArray is not copied by
                  asarray and ascontiguousarray: every DeviceArray is contiguous)
    shape         reshape squeeze expand_dims transpose swapaxes moveaxis broadcast_to
    join, split   concatenate stack split array_split
    gather        take_along_axis (its adjoint is ``array.add_at_along_axis``)
    elementwise   where (three arguments) clip
    reductions    sum mean max amax min amin
    other         copyto result_type shape ndim size

Host arrays among the inputs are copied over (they are small constants). Any other NumPy
function raises a TypeError naming it (``DeviceArray.__array_function__``). Copies versus
views are as for ``DeviceArray`` indexing: a result is a view of its input only when it is a
contiguous run of the input's buffer.
"""
from __future__ import annotations

import operator

import numpy as np
from numpy.lib.array_utils import normalize_axis_index, normalize_axis_tuple

from . import elementwise as ew
from .along_axis import launch_take
from .array import (DeviceArray, _as_array, _broadcast_shape, _is_scalar, _operand, _output,
                    _index_array, _overlap, asdevice, empty, full)

FUNCTIONS = {}


def _implements(*functions):
    def register(impl):
        for function in functions:
            FUNCTIONS[function] = impl
        return impl
    return register


def _unsupported(name, **arguments):
    """A TypeError for arguments given other than their defaults."""
    given = sorted(k for k, v in arguments.items() if v is not np._NoValue)
    if given:
        raise TypeError(f"np.{name}: arguments {given} are not implemented for DeviceArray")


# ---- creation ----------------------------------------------------------------------------------


def _like(a, dtype, shape):
    a = _as_array(a)
    return (a.shape if shape is None else shape), (a.dtype if dtype is None else dtype)


@_implements(np.empty_like)
def _empty_like(a, dtype=None, order="K", subok=True, shape=None, *, device=None):
    return empty(*_like(a, dtype, shape))


@_implements(np.zeros_like)
def _zeros_like(a, dtype=None, order="K", subok=True, shape=None, *, device=None):
    shape, dtype = _like(a, dtype, shape)
    return full(shape, 0, dtype)


@_implements(np.ones_like)
def _ones_like(a, dtype=None, order="K", subok=True, shape=None, *, device=None):
    shape, dtype = _like(a, dtype, shape)
    return full(shape, 1, dtype)


@_implements(np.full_like)
def _full_like(a, fill_value, dtype=None, order="K", subok=True, shape=None, *, device=None):
    shape, dtype = _like(a, dtype, shape)
    return full(shape, fill_value, dtype)


@_implements(np.empty)
def _empty(shape, dtype=float, order="C", *, device=None):
    return empty(shape, dtype)


@_implements(np.zeros)
def _zeros(shape, dtype=float, order="C", *, device=None):
    return full(shape, 0, dtype)


@_implements(np.ones)
def _ones(shape, dtype=None, order="C", *, device=None):
    return full(shape, 1, float if dtype is None else dtype)


@_implements(np.full)
def _full(shape, fill_value, dtype=None, order="C", *, device=None):
    return full(shape, fill_value, dtype)


@_implements(np.ascontiguousarray)
def _ascontiguousarray(a, dtype=None):
    """Reached only through ``like=`` (NumPy does not dispatch it on ``a``): ``a`` on the
    device, no copy when it is there already (every DeviceArray is contiguous)."""
    return asdevice(a, dtype)


@_implements(np.asarray)
def _asarray(a, dtype=None, order=None, *, device=None, copy=None):
    """``np.asarray(a, like=d)``: ``a`` on the device (copied over from the host, no copy of a
    DeviceArray of that dtype). Without ``like=``, ``np.asarray(d)`` raises (``__array__``)."""
    result = asdevice(a, dtype)
    return result.copy() if copy and result is a else result


@_implements(np.array)
def _array(a, dtype=None, *, copy=True, order="K", subok=False, ndmin=0):
    """``np.array(a, like=d)``: a copy of ``a`` on the device (``copy=False`` or None: no copy
    of a DeviceArray of that dtype)."""
    result = asdevice(a, dtype)
    if copy and result is a:
        result = result.copy()
    if ndmin > result.ndim:
        result = result.reshape((1,) * (ndmin - result.ndim) + result.shape)
    return result


# ---- shape -------------------------------------------------------------------------------------


@_implements(np.reshape)
def _reshape(a, shape=None, order="C", *, newshape=None, copy=None):
    a = _as_array(a)
    result = a.reshape(newshape if shape is None else shape, order=order)
    return result.copy() if copy else result


@_implements(np.squeeze)
def _squeeze(a, axis=None):
    return _as_array(a).squeeze(axis)


@_implements(np.expand_dims)
def _expand_dims(a, axis):
    a = _as_array(a)
    axes = normalize_axis_tuple(axis if isinstance(axis, (tuple, list)) else (axis,),
                                a.ndim + (len(axis) if isinstance(axis, (tuple, list)) else 1))
    dims = iter(a.shape)
    return a.reshape(tuple(1 if k in axes else next(dims) for k in range(a.ndim + len(axes))))


@_implements(np.transpose)
def _transpose(a, axes=None):
    return _as_array(a).transpose(axes)


@_implements(np.swapaxes)
def _swapaxes(a, axis1, axis2):
    return _as_array(a).swapaxes(axis1, axis2)


@_implements(np.moveaxis)
def _moveaxis(a, source, destination):
    a = _as_array(a)
    source = normalize_axis_tuple(source, a.ndim, "source")
    destination = normalize_axis_tuple(destination, a.ndim, "destination")
    if len(source) != len(destination):
        raise ValueError("`source` and `destination` arguments must have the same number of "
                         "elements")
    order = [k for k in range(a.ndim) if k not in source]
    for dest, src in sorted(zip(destination, source)):
        order.insert(dest, src)
    return a.transpose(order)


@_implements(np.broadcast_to)
def _broadcast_to(array, shape, subok=False):
    """A copy of ``array`` repeated to ``shape`` (a view where that repeats nothing)."""
    array = _as_array(array)
    shape = tuple(operator.index(n) for n in (shape if isinstance(shape, (tuple, list))
                                              else (shape,)))
    if (len(shape) < array.ndim
            or _broadcast_shape(array.shape, shape, strict=False) != shape):
        raise ValueError(f"cannot broadcast an array of shape {array.shape} to shape {shape}")
    return array._select(0, shape, ew.broadcast_strides(array.shape, shape))


# ---- join and split ----------------------------------------------------------------------------


@_implements(np.concatenate)
def _concatenate(arrays, axis=0, out=None, *, dtype=None, casting="same_kind"):
    arrays = [_as_array(x) for x in arrays]
    if not arrays:
        raise ValueError("need at least one array to concatenate")
    if axis is None:
        arrays, axis = [x.ravel() for x in arrays], 0
    first = arrays[0]
    if first.ndim == 0:
        raise ValueError("zero-dimensional arrays cannot be concatenated")
    axis = normalize_axis_index(axis, first.ndim)
    for i, x in enumerate(arrays):
        if x.ndim != first.ndim:
            raise ValueError(f"all the input arrays must have same number of dimensions, but "
                             f"the array at index 0 has {first.ndim} dimension(s) and the array "
                             f"at index {i} has {x.ndim} dimension(s)")
        for k in range(first.ndim):
            if k != axis and x.shape[k] != first.shape[k]:
                raise ValueError(f"all the input array dimensions except for the concatenation "
                                 f"axis must match exactly, but along dimension {k}, the array "
                                 f"at index 0 has size {first.shape[k]} and the array at index "
                                 f"{i} has size {x.shape[k]}")
    shape = list(first.shape)
    shape[axis] = sum(x.shape[axis] for x in arrays)
    shape = tuple(shape)
    if dtype is None:
        dtype = np.result_type(*(x.dtype for x in arrays))
    result = _output(out, shape, dtype, "concatenate", broadcast=False)
    strides = ew.c_strides(shape)
    start = 0
    for x in arrays:
        x = x.copy() if _overlap(x, result) else x
        ew.launch_map(ew.COPY, x.dtype, x.shape, result._flat(), start * strides[axis], strides,
                      src=x._flat(), src_strides=ew.c_strides(x.shape))
        start += x.shape[axis]
    return result


@_implements(np.stack)
def _stack(arrays, axis=0, out=None, *, dtype=None, casting="same_kind"):
    arrays = [_as_array(x) for x in arrays]
    if not arrays:
        raise ValueError("need at least one array to stack")
    if any(x.shape != arrays[0].shape for x in arrays):
        raise ValueError("all input arrays must have the same shape")
    axis = normalize_axis_index(axis, arrays[0].ndim + 1)
    expanded = [x.reshape(x.shape[:axis] + (1,) + x.shape[axis:]) for x in arrays]
    return _concatenate(expanded, axis, out, dtype=dtype)


def _split(ary, indices_or_sections, axis, equal):
    ary = _as_array(ary)
    axis = normalize_axis_index(axis, ary.ndim)
    n = ary.shape[axis]
    try:
        sections = operator.index(indices_or_sections)
    except TypeError:
        bounds = [0] + list(indices_or_sections) + [n]
    else:
        if sections <= 0:
            raise ValueError("number sections must be larger than 0.")
        if equal and n % sections:
            raise ValueError("array split does not result in an equal division")
        each, extras = divmod(n, sections)
        sizes = [each + 1] * extras + [each] * (sections - extras)
        bounds = [sum(sizes[:i]) for i in range(sections + 1)]
    lead = (slice(None),) * axis
    return [ary[lead + (slice(start, stop),)] for start, stop in zip(bounds[:-1], bounds[1:])]


@_implements(np.split)
def _split_equal(ary, indices_or_sections, axis=0):
    return _split(ary, indices_or_sections, axis, equal=True)


@_implements(np.array_split)
def _array_split(ary, indices_or_sections, axis=0):
    return _split(ary, indices_or_sections, axis, equal=False)


# ---- gather ------------------------------------------------------------------------------------


@_implements(np.take_along_axis)
def _take_along_axis(arr, indices, axis=-1):
    """out[m, i] = arr[m, indices[m, i]] along ``axis`` (None: of the flattened array)."""
    arr = _as_array(arr)
    if axis is None:
        arr, axis = arr.ravel(), 0
    axis = normalize_axis_index(axis, arr.ndim)
    n_axis = arr.shape[axis]
    index = _index_array(indices, n_axis, axis)
    if index.ndim != arr.ndim:
        raise ValueError("`indices` and `arr` must have the same number of dimensions")
    one_along_axis = tuple(1 if k == axis else n for k, n in enumerate(arr.shape))
    shape = _broadcast_shape(index.shape, one_along_axis)
    own = ew.c_strides(arr.shape)
    arr_strides = tuple(0 if k == axis or arr.shape[k] == 1 else own[k]
                        for k in range(arr.ndim))
    result = empty(shape, arr.dtype)
    launch_take(result._flat(), shape, arr._flat(), arr_strides, own[axis], n_axis,
                index._flat(), ew.broadcast_strides(index.shape, shape))
    return result


# ---- elementwise -------------------------------------------------------------------------------

_NO_ARGUMENT = object()


@_implements(np.where)
def _where(condition, x=_NO_ARGUMENT, y=_NO_ARGUMENT):
    """x where condition else y (each an array or a scalar), broadcast together."""
    if x is _NO_ARGUMENT or y is _NO_ARGUMENT:
        raise TypeError("np.where(condition) with one argument is not implemented for "
                        "DeviceArray (the number of indices depends on the data); use "
                        "np.where(condition, x, y)")
    condition, x, y = _as_array(condition), _operand(x), _operand(y)
    dtype = np.result_type(*(v.dtype if isinstance(v, DeviceArray) else v for v in (x, y)))
    shape = _broadcast_shape(condition.shape, *(v.shape for v in (x, y)
                                                 if isinstance(v, DeviceArray)))
    result = empty(shape, dtype)

    def operand(v):
        if isinstance(v, DeviceArray):
            return v._flat(), ew.broadcast_strides(v.shape, shape)
        return v, (0,) * len(shape)

    ew.launch_where(dtype, shape, result._flat(), condition._flat(),
                    ew.broadcast_strides(condition.shape, shape), *operand(x), *operand(y))
    return result


@_implements(np.clip)
def _clip(a, a_min=np._NoValue, a_max=np._NoValue, out=None, *, min=np._NoValue,
          max=np._NoValue, **kwargs):
    """minimum(maximum(a, a_min), a_max); a bound of None is left out."""
    if kwargs:
        raise TypeError(f"np.clip: arguments {sorted(kwargs)} are not implemented for "
                        f"DeviceArray")
    low = None if a_min is np._NoValue and min is np._NoValue else (
        min if a_min is np._NoValue else a_min)
    high = None if a_max is np._NoValue and max is np._NoValue else (
        max if a_max is np._NoValue else a_max)
    result = _as_array(a)
    if low is None and high is None:
        return _copyto_new(result, out)
    if low is not None:
        result = np.maximum(result, low, out=out if high is None else None)
    if high is not None:
        result = np.minimum(result, high, out=out)
    return result


def _copyto_new(a, out):
    if out is None:
        return a.copy()
    out[...] = a
    return out


# ---- reductions --------------------------------------------------------------------------------


@_implements(np.sum)
def _sum(a, axis=None, dtype=None, out=None, keepdims=False, initial=np._NoValue,
         where=np._NoValue):
    _unsupported("sum", initial=initial, where=where)
    return _as_array(a).sum(axis=axis, dtype=dtype, out=out, keepdims=bool(keepdims))


@_implements(np.mean)
def _mean(a, axis=None, dtype=None, out=None, keepdims=False, *, where=np._NoValue):
    _unsupported("mean", where=where)
    return _as_array(a).mean(axis=axis, dtype=dtype, out=out, keepdims=bool(keepdims))


@_implements(np.max, np.amax)
def _max(a, axis=None, out=None, keepdims=False, initial=np._NoValue, where=np._NoValue):
    _unsupported("max", initial=initial, where=where)
    return _as_array(a).max(axis=axis, out=out, keepdims=bool(keepdims))


@_implements(np.min, np.amin)
def _min(a, axis=None, out=None, keepdims=False, initial=np._NoValue, where=np._NoValue):
    _unsupported("min", initial=initial, where=where)
    return _as_array(a).min(axis=axis, out=out, keepdims=bool(keepdims))


# ---- other -------------------------------------------------------------------------------------


@_implements(np.copyto)
def _copyto(dst, src, casting="same_kind", where=True):
    """dst[...] = src (broadcast, cast): dst must be a DeviceArray."""
    if not isinstance(dst, DeviceArray):
        raise TypeError("np.copyto: the destination is a host array and the source lives on "
                        "the GPU; copy the source with .copy_to_host() first")
    if where is not True:
        raise TypeError("np.copyto: where= is not implemented for DeviceArray")
    src = _operand(src)
    if not _is_scalar(src) and not np.can_cast(src.dtype, dst.dtype, casting):
        raise TypeError(f"Cannot cast array data from {src.dtype!r} to {dst.dtype!r} according "
                        f"to the rule {casting!r}")
    dst[...] = src


@_implements(np.result_type)
def _result_type(*arrays_and_dtypes):
    return np.result_type(*(x.dtype if isinstance(x, DeviceArray) else x
                            for x in arrays_and_dtypes))


@_implements(np.shape)
def _shape(a):
    return a.shape


@_implements(np.ndim)
def _ndim(a):
    return a.ndim


@_implements(np.size)
def _size(a, axis=None):
    return a.size if axis is None else a.shape[normalize_axis_index(axis, a.ndim)]

