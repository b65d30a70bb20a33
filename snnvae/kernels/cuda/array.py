"""``DeviceArray``: a NumPy-compatible array that lives on the GPU.

A thin class around a C-contiguous numba device array (``DeviceNDArray``, or ``FakeCUDAArray``
in the CUDA simulator) that implements NumPy's dispatch protocols, ``__array_ufunc__`` (NEP 13)
and ``__array_function__`` (NEP 18), with the numba.cuda kernels of this package:

    array_ufuncs.py     the ufuncs, their ``reduce``, matmul, the reductions (NEP 13)
    array_functions.py  the NumPy functions answered (NEP 18, NEP 35 ``like=``)
    elementwise.py      kernels: maps (unary ops, casts, strided copies), broadcast binary
                        ops, where
    reduce_axes.py      sum, mean, max, min over any axes (deterministic, float64
                        accumulation), with the kernels of reduce.py
    along_axis.py       kernels: take_along_axis and its adjoint, add_at_along_axis
    gemm.py             kernel: matmul (2-D, and batched with broadcast batch dimensions)

so that code written for NumPy arrays, ``np.exp(a)``, ``a * 2.0``, ``a.sum(axis=0)``,
``np.concatenate([a, b], axis=-1)``, ``np.zeros_like(a)``, runs unchanged on the device when
``a`` is a DeviceArray, and its results stay there. The NumPy functions it answers are listed
in ``array_functions.py``; any other one raises a TypeError naming it, and so does any NumPy
call that would read the data into a host array (``np.asarray(a)`` calls ``__array__``):
data crosses to the host only through ``copy_to_host()``, ``item()`` and the
scalar conversions ``float``, ``int`` and ``bool`` of one element.

Result dtypes follow NumPy 2 (NEP 50): they come from the ufunc's own type resolution
(``ufunc.resolve_dtypes``), where Python scalars are weak (a float32 array times 2.0 stays
float32) and NumPy scalars and arrays are not (float32 with float64 gives float64);
comparisons give bool. Supported dtypes: bool, the integers, float32 and float64.

Shapes are tuples of at most 8 dimensions (the kernels walk index spaces of up to 8).
"""
from __future__ import annotations

import math
import operator

import numpy as np
from numpy.lib.array_utils import normalize_axis_index, normalize_axis_tuple

from . import elementwise as ew
from . import launch
from .along_axis import launch_add_at
from .reduce import MAX, MIN, SUM

_HOST_HINT = ("call .copy_to_host() (or snnvae.device.to_host) to bring it to the "
              "host explicitly, or move the tensor to the host first. If a model moved to the "
              "GPU (model.to_device('cuda')) got here, its ops ran on the CPU kernels: select "
              "the GPU kernels with snnvae.backend.set_backend('cuda')")


def _check_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind not in "biu" and dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype {dtype} is not supported on the device (bool, integers, float32 "
                        f"and float64 are)")
    return dtype


def _view(dev, offset, shape):
    """The C-contiguous array of ``shape`` made of the elements offset, offset + 1, ... of the
    C-contiguous device array ``dev``, sharing its memory (a new empty array when ``shape`` has
    no element: there is nothing to share)."""
    shape = tuple(shape)
    size = math.prod(shape)
    if size == 0:
        return launch.empty(shape, dev.dtype)
    if launch.SIMULATOR:
        return dev.reshape(dev.size)[offset:offset + size].reshape(shape)
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    itemsize = dev.dtype.itemsize
    data = dev.gpu_data.view(offset * itemsize, (offset + size) * itemsize)
    strides = tuple(s * itemsize for s in ew.c_strides(shape))
    return DeviceNDArray(shape, strides, dev.dtype, stream=dev.stream, gpu_data=data)


def _span(dev):
    """(first byte, last byte + 1) of a contiguous device array's memory; (0, 0) if empty."""
    if dev.size == 0:
        return 0, 0
    if launch.SIMULATOR:
        start = dev._ary.__array_interface__["data"][0]
    else:
        start = dev.__cuda_array_interface__["data"][0]
    return start, start + dev.size * dev.dtype.itemsize


def _is_numba_array(a):
    """True for a numba device array (``DeviceNDArray``, ``FakeCUDAArray``), not a DeviceArray."""
    return (not isinstance(a, DeviceArray) and launch.is_device_array(a)
            and hasattr(a, "is_c_contiguous"))


def _alloc(shape, dtype):
    """A new uninitialised C-contiguous device array (0-d arrays as a view of one element)."""
    shape = tuple(shape)
    return _view(launch.empty((1,), dtype), 0, ()) if shape == () else launch.empty(shape, dtype)


class _Flags:
    """The ``flags`` of a DeviceArray: always C-contiguous and writeable."""
    c_contiguous = True
    writeable = True

    def __init__(self, shape):
        self.f_contiguous = sum(n != 1 for n in shape) <= 1

    def __getitem__(self, name):
        return {"C_CONTIGUOUS": True, "C": True, "WRITEABLE": True, "W": True,
                "F_CONTIGUOUS": self.f_contiguous, "F": self.f_contiguous}[name]


def _operators(ufunc):
    """(a op b, b op a, a op= b) of a DeviceArray as ``ufunc`` calls (see ``_dunder``); the
    in-place one writes into a, or, for a selection copy, returns a new array (``_in_place``)."""
    def forward(self, other):
        return _dunder(ufunc, self, other)

    def reflected(self, other):
        return _dunder(ufunc, other, self)

    def in_place(self, other):
        return self._in_place(ufunc, other)
    return forward, reflected, in_place


class DeviceArray:
    """A C-contiguous array on the GPU that NumPy functions and operators accept (see the module
    docstring). ``DeviceArray(device_array)`` wraps a C-contiguous numba device array (``.device``)
    without copying; ``asdevice`` makes one from anything.

    Differences from NumPy arrays:

    - Indexing returns a *view* sharing memory only when the selection is one contiguous run
      of the buffer: integers, full ranges and step-1 slices on the leading axes (then writes
      through it, ``a[t][...] = 0``, change ``a``). Any other selection (a step, a slice of an
      inner axis, ...) returns a contiguous *copy*. Likewise ``transpose``, ``swapaxes``,
      ``moveaxis`` and ``broadcast_to`` return copies unless the result happens to be
      contiguous; ``reshape``, ``ravel``, ``squeeze`` and ``expand_dims`` are always views.
      Every DeviceArray is thus C-contiguous.
    - An integer index of every axis gives a 0-d DeviceArray, not a host scalar: reading data
      back is explicit (``item()``, ``float(a)``, ``copy_to_host()``).
    - Boolean and integer-array (fancy) indexing raise a TypeError: use
      ``np.take_along_axis`` / ``add_at_along_axis`` or ``np.where``.
    - ``np.asarray(a)``, ``np.array(a)`` and ``np.ascontiguousarray(a)`` raise a TypeError
      rather than copy to the host (NumPy does not dispatch them on ``a``; the last one with
      ``like=a`` returns ``a``).
    - Writes into such a copy raise a ValueError (``a[:, 1].fill(0)``,
      ``a[:, 1][...] = 0``, ``np.add(x, 1, out=a[:, 1])``), since they would not reach ``a``;
      ``a[:, 1] += 1`` works (Python stores the result back through ``a[:, 1] = ...``). Only
      ``b = a[:, 1]; b += 1`` differs from NumPy without an error: ``a`` does not change.
    - Operands overlapping the output in memory (``a[1:] = a[:-1]``, ``np.add(a[0], a, out=a)``)
      are copied first, as NumPy buffers them; only elementwise-aligned aliasing (``a += b``)
      is computed in place.
    """

    __array_priority__ = 1000
    __hash__ = None
    # True for the copy a strided selection or a transpose returns where NumPy returns a view:
    # writes into it (fill, a[...] = v, out=) raise instead of silently missing the original
    _selection_copy = False

    def __init__(self, device_array):
        if not _is_numba_array(device_array):
            raise TypeError(f"DeviceArray wraps a numba device array, not "
                            f"{type(device_array).__name__}; use asdevice() to copy host data")
        if not device_array.is_c_contiguous():
            raise TypeError("DeviceArray wraps C-contiguous device arrays only; asdevice() makes "
                            "a contiguous copy")
        self._dtype = _check_dtype(device_array.dtype)
        self._shape = tuple(int(n) for n in device_array.shape)
        if len(self._shape) > ew.MAX_DIMS:
            raise ValueError(f"DeviceArray supports at most {ew.MAX_DIMS} dimensions, got "
                             f"{len(self._shape)}")
        self._dev = device_array

    # ---- attributes ---------------------------------------------------------------------------

    @property
    def device(self):
        """The wrapped numba device array (C-contiguous, this array's shape and dtype)."""
        return self._dev

    @property
    def shape(self):
        return self._shape

    @property
    def dtype(self):
        return self._dtype

    @property
    def ndim(self):
        return len(self._shape)

    @property
    def size(self):
        return math.prod(self._shape)

    @property
    def itemsize(self):
        return self._dtype.itemsize

    @property
    def nbytes(self):
        return self.size * self._dtype.itemsize

    @property
    def strides(self):
        return tuple(s * self.itemsize for s in ew.c_strides(self._shape))

    @property
    def flags(self):
        return _Flags(self._shape)

    @property
    def T(self):
        return self.transpose()

    def __len__(self):
        if not self._shape:
            raise TypeError("len() of unsized object")
        return self._shape[0]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __repr__(self):
        return f"DeviceArray(shape={self._shape}, dtype={self._dtype}, on the GPU)"

    def _flat(self):
        """The 1-D view of the buffer the kernels walk."""
        return _view(self._dev, 0, (self.size,))

    # ---- to the host: the only ways out --------------------------------------------------------

    def __array__(self, dtype=None, copy=None):
        raise TypeError(f"{self!r} lives on the GPU and NumPy cannot read it implicitly: "
                        f"{_HOST_HINT}")

    def copy_to_host(self):
        """A NumPy array holding a copy of the data."""
        if self.size == 0:
            return np.empty(self._shape, self._dtype)
        return self._flat().copy_to_host().reshape(self._shape)

    def item(self):
        """The one element as a Python scalar (a read back from the device)."""
        if self.size != 1:
            raise ValueError("can only convert an array of size 1 to a Python scalar")
        return self._flat().copy_to_host()[0].item()

    def _scalar(self, convert):
        if self.size != 1:
            raise TypeError("only arrays of one element can be converted to Python scalars")
        return convert(self.item())

    def __float__(self):
        return self._scalar(float)

    def __int__(self):
        return self._scalar(int)

    def __bool__(self):
        if self.size != 1:
            raise ValueError("The truth value of an array with more than one element (or none) "
                             "is ambiguous. Use a.any() or a.all()")
        return bool(self.item())

    # ---- NumPy protocols -----------------------------------------------------------------------

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        from .array_ufuncs import dispatch
        return dispatch(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        from .array_functions import FUNCTIONS
        impl = FUNCTIONS.get(func)
        if impl is None:
            raise TypeError(f"np.{func.__name__} is not implemented for DeviceArray (the array "
                            f"lives on the GPU); {_HOST_HINT} to use it")
        if not all(issubclass(t, (DeviceArray, np.ndarray)) for t in types):
            return NotImplemented
        return impl(*args, **kwargs)

    # ---- shape ---------------------------------------------------------------------------------

    def reshape(self, *shape, order="C"):
        """A view of the same buffer with another shape (one dimension may be -1)."""
        if order != "C":
            raise NotImplementedError("DeviceArray.reshape: only order='C'")
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])
        return self._view_of(_view(self._dev, 0, _resolve_shape(shape, self.size)))

    def ravel(self):
        return self.reshape(-1)

    def flatten(self):
        return self.copy().reshape(-1)

    def squeeze(self, axis=None):
        if axis is None:
            axes = tuple(k for k, n in enumerate(self._shape) if n == 1)
        else:
            axes = normalize_axis_tuple(axis, self.ndim)
            if any(self._shape[k] != 1 for k in axes):
                raise ValueError("cannot select an axis to squeeze out which has size not "
                                 "equal to one")
        return self.reshape(tuple(n for k, n in enumerate(self._shape) if k not in axes))

    def transpose(self, *axes):
        """The axes permuted (reversed by default): a copy unless it is still contiguous."""
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list, np.ndarray))):
            axes = axes[0]
        if axes is None or len(axes) == 0:
            axes = tuple(range(self.ndim - 1, -1, -1))
        axes = normalize_axis_tuple(tuple(int(k) for k in axes), self.ndim)
        if len(axes) != self.ndim:
            raise ValueError("axes don't match array")
        strides = ew.c_strides(self._shape)
        return self._select(0, tuple(self._shape[k] for k in axes),
                            tuple(strides[k] for k in axes))

    def swapaxes(self, axis1, axis2):
        axes = list(range(self.ndim))
        a, b = normalize_axis_index(axis1, self.ndim), normalize_axis_index(axis2, self.ndim)
        axes[a], axes[b] = axes[b], axes[a]
        return self.transpose(axes)

    def _select(self, offset, shape, strides):
        """The elements at offset + sum_k i_k strides[k] over ``shape``: a view when they are
        one contiguous run of the buffer in row-major order, else a contiguous copy."""
        if math.prod(shape) and _is_contiguous(shape, strides):
            return self._view_of(_view(self._dev, offset, shape))
        result = empty(shape, self._dtype)
        ew.launch_map(ew.COPY, self._dtype, shape, result._flat(), 0, ew.c_strides(shape),
                      src=self._flat(), src_offset=offset, src_strides=strides)
        result._selection_copy = True
        return result

    def _view_of(self, device_array):
        """A DeviceArray over part of this one's buffer (a selection copy's views are too)."""
        view = DeviceArray(device_array)
        view._selection_copy = self._selection_copy
        return view

    def _check_writable(self, what):
        """Refuse a write into a selection copy (see the class docstring)."""
        if self._selection_copy:
            raise ValueError(
                f"{what}: this DeviceArray is a copy of a strided selection or a transpose, "
                f"where NumPy would give a view, so the write would not reach the array it came "
                f"from. Write through the original instead: a[key] = value, a[key] += value, "
                f"or compute the result and assign it with a[key] = result")

    def _in_place(self, ufunc, other):
        """``self op= other``: in place, or, for a selection copy, a new array (Python then
        stores it back where it came from: ``a[:, 1] += 1`` works)."""
        return _dunder(ufunc, self, other, out=None if self._selection_copy else self)

    # ---- copies and casts ----------------------------------------------------------------------

    def copy(self):
        return self.astype(self._dtype)

    def astype(self, dtype, copy=True):
        """The data cast to ``dtype`` (truncating floats to integers, nonzero to True)."""
        dtype = _check_dtype(dtype)
        if dtype == self._dtype and not copy:
            return self
        result = empty(self._shape, dtype)
        strides = ew.c_strides(self._shape)
        ew.launch_map(ew.COPY, self._dtype, self._shape, result._flat(), 0, strides,
                      src=self._flat(), src_strides=strides)
        return result

    def fill(self, value):
        """Set every element to the scalar ``value``, in place."""
        self._check_writable("fill")
        ew.launch_map(ew.COPY, self._dtype, self._shape, self._flat(), 0,
                      ew.c_strides(self._shape), scalar=_host_scalar(value))

    # ---- reductions ----------------------------------------------------------------------------

    def sum(self, axis=None, dtype=None, out=None, keepdims=False):
        """Sum over ``axis`` (None: all), accumulated in float64 (floats) or int64 (integers,
        bool); the dtype of integer and bool sums is int64 (uint64 for unsigned), as NumPy's."""
        if dtype is None:
            dtype = (self._dtype if self._dtype.kind == "f" else
                     np.dtype(np.uint64 if self._dtype.kind == "u" else np.int64))
        from .array_ufuncs import reduce
        return reduce(self, SUM, "add", axis, keepdims, dtype, out)

    def mean(self, axis=None, dtype=None, out=None, keepdims=False):
        """Mean over ``axis``: the float64 sum divided by the count, rounded to the dtype
        (float64 for integer and bool arrays)."""
        if dtype is None:
            dtype = self._dtype if self._dtype.kind == "f" else np.dtype(np.float64)
        from .array_ufuncs import reduce
        return reduce(self, SUM, "mean", axis, keepdims, dtype, out, mean=True)

    def max(self, axis=None, out=None, keepdims=False):
        from .array_ufuncs import reduce
        return reduce(self, MAX, "maximum", axis, keepdims, self._dtype, out)

    def min(self, axis=None, out=None, keepdims=False):
        from .array_ufuncs import reduce
        return reduce(self, MIN, "minimum", axis, keepdims, self._dtype, out)

    # ---- indexing ------------------------------------------------------------------------------

    def __getitem__(self, key):
        offset, shape, strides = _index_plan(self._shape, key)
        return self._select(offset, shape, strides)

    def __setitem__(self, key, value):
        """Write a scalar, a DeviceArray or a host array (copied over), broadcast to the
        selection and cast to this array's dtype, into the selected elements."""
        self._check_writable("a[...] = value")
        offset, shape, strides = _index_plan(self._shape, key)
        if math.prod(shape) == 0:
            return
        if _is_scalar(value) or (isinstance(value, np.ndarray) and value.ndim == 0):
            ew.launch_map(ew.COPY, self._dtype, shape, self._flat(), offset, strides,
                          scalar=_host_scalar(value))
            return
        value = _as_array(value)
        while value.ndim > len(shape) and value.shape[0] == 1:
            value = value.reshape(value.shape[1:])
        if _broadcast_shape(value.shape, shape, strict=False) != shape:
            raise ValueError(f"could not broadcast input array from shape {value.shape} into "
                             f"shape {shape}")
        start = _span(self._dev)[0] + offset * self.itemsize
        if (_is_contiguous(shape, strides) and value.shape == shape
                and value.dtype == self._dtype and _span(value._dev)[0] == start):
            return      # the value is the selection itself (a[i] += b writes it back)
        if _overlap(value, self):
            value = value.copy()
        ew.launch_map(ew.COPY, value.dtype, shape, self._flat(), offset, strides,
                      src=value._flat(), src_strides=ew.broadcast_strides(value.shape, shape))

    # ---- operators -----------------------------------------------------------------------------
    # a op b, b op a and a op= b through the ufuncs (``_operators``); & | ~ on bool arrays only

    __add__, __radd__, __iadd__ = _operators(np.add)
    __sub__, __rsub__, __isub__ = _operators(np.subtract)
    __mul__, __rmul__, __imul__ = _operators(np.multiply)
    __truediv__, __rtruediv__, __itruediv__ = _operators(np.true_divide)
    __matmul__, __rmatmul__, _ = _operators(np.matmul)
    __gt__, __ge__, __lt__, __le__, __eq__, __ne__ = (
        _operators(u)[0] for u in (np.greater, np.greater_equal, np.less, np.less_equal,
                                   np.equal, np.not_equal))
    _power, __rpow__, _ = _operators(np.power)
    del _

    def __pow__(self, other):
        # a Python 2 or 2.0 keeps the dtype; a NumPy scalar may promote (np.power decides)
        if self._dtype.kind == "f" and type(other) in (int, float) and other == 2:
            return np.square(self)
        return self._power(other)

    def __neg__(self):
        return np.negative(self)

    def __pos__(self):
        return np.positive(self)

    def __abs__(self):
        return np.absolute(self)

    def __invert__(self):
        return np.logical_not(_bool_only(self, "~"))

    def __and__(self, other):
        return _dunder(np.logical_and, _bool_only(self, "&"), _bool_only(other, "&"))

    def __rand__(self, other):
        return _dunder(np.logical_and, _bool_only(other, "&"), _bool_only(self, "&"))

    def __or__(self, other):
        return _dunder(np.logical_or, _bool_only(self, "|"), _bool_only(other, "|"))

    def __ror__(self, other):
        return _dunder(np.logical_or, _bool_only(other, "|"), _bool_only(self, "|"))


# --------------------------------------------------------------------------------------------
# Module-level functions
# --------------------------------------------------------------------------------------------


def asdevice(a, dtype=None):
    """``a`` as a DeviceArray: a DeviceArray passes through (cast when ``dtype`` differs), a
    numba device array is wrapped (copied when it is not contiguous), host data (an array,
    a scalar, a list) is copied over."""
    if isinstance(a, DeviceArray):
        return a if dtype is None else a.astype(dtype, copy=False)
    if _is_numba_array(a):
        if not a.is_c_contiguous():
            contiguous = launch.empty(a.shape, a.dtype)
            contiguous[...] = a         # numba's own strided copy kernel
            a = contiguous
        result = DeviceArray(a)
        return result if dtype is None else result.astype(dtype, copy=False)
    host = np.asarray(a, dtype=dtype)
    _check_dtype(host.dtype)
    result = empty(host.shape, host.dtype)
    if host.size:
        result._flat().copy_to_device(np.ascontiguousarray(host).reshape(-1))
    return result


def empty(shape, dtype=np.float64):
    """A new uninitialised DeviceArray."""
    return DeviceArray(_alloc(_as_shape(shape), _check_dtype(dtype)))


def full(shape, value, dtype=None):
    """A new DeviceArray filled with ``value`` (dtype as NumPy's: that of ``value``)."""
    if isinstance(value, DeviceArray):
        dtype = value.dtype if dtype is None else dtype
        result = empty(shape, dtype)
        result[...] = value
        return result
    result = empty(shape, np.asarray(value).dtype if dtype is None else dtype)
    result.fill(value)
    return result


def add_at_along_axis(target, index, values, axis):
    """In place: target[..., index[..., i, ...], ...] += values[..., i, ...] along ``axis``, the
    adjoint of ``np.take_along_axis`` (repeated indices accumulate, in order of i, without
    atomics: deterministic).

    target: DeviceArray; index: integer array (host or device) with target's shape except
    along ``axis``; values: scalar or array broadcastable to index's shape."""
    if not isinstance(target, DeviceArray):
        raise TypeError(f"add_at_along_axis: target must be a DeviceArray, got "
                        f"{type(target).__name__}")
    target._check_writable("add_at_along_axis")
    axis = normalize_axis_index(axis, target.ndim)
    index = _index_array(index, target.shape[axis], axis)
    if index.ndim != target.ndim or any(
            index.shape[k] != target.shape[k] for k in range(target.ndim) if k != axis):
        raise ValueError(f"add_at_along_axis: index of shape {index.shape} does not match "
                         f"target of shape {target.shape} outside axis {axis}")
    values = _operand(values)
    if not isinstance(values, DeviceArray):
        values = full(index.shape, values, target.dtype)
    if _broadcast_shape(values.shape, index.shape, strict=False) != index.shape:
        raise ValueError(f"add_at_along_axis: values of shape {values.shape} do not broadcast "
                         f"to the index shape {index.shape}")
    if _overlap(values, target):
        values = values.copy()

    def layout(strides):
        return (tuple(s for k, s in enumerate(strides) if k != axis), strides[axis])

    lines = tuple(n for k, n in enumerate(index.shape) if k != axis)
    launch_add_at(target._flat(), layout(ew.c_strides(target.shape)),
                  index._flat(), layout(ew.c_strides(index.shape)),
                  values._flat(), layout(ew.broadcast_strides(values.shape, index.shape)),
                  lines, index.shape[axis], target.shape[axis])


def _index_array(index, n_axis, axis):
    """An integer index array on the device. Host indices are checked against the axis length
    (IndexError as NumPy's) before they are copied over; device ones cannot be checked without
    a read back (out-of-range ones are read as 0 / skipped by the kernels)."""
    if isinstance(index, DeviceArray) or _is_numba_array(index):
        index = asdevice(index)
        if index.dtype.kind not in "iu":
            raise IndexError(f"indices must be an integer array, got {index.dtype}")
        return index
    host = np.asarray(index)
    if host.dtype.kind not in "iu":
        raise IndexError(f"indices must be an integer array, got {host.dtype}")
    bad = host[(host < -n_axis) | (host >= n_axis)]
    if bad.size:
        raise IndexError(f"index {bad.flat[0]} is out of bounds for axis {axis} with size "
                         f"{n_axis}")
    return asdevice(host)


# --------------------------------------------------------------------------------------------
# Operands, shapes, outputs
# --------------------------------------------------------------------------------------------


def _is_scalar(x):
    return isinstance(x, (bool, int, float, np.generic))


def _host_scalar(value):
    """A scalar from a Python/NumPy scalar or a 0-d host array (never from device data)."""
    if isinstance(value, np.ndarray):
        return value[()]
    if not _is_scalar(value):
        raise TypeError(f"expected a scalar, got {type(value).__name__}")
    return value


def _operand(x):
    """A DeviceArray (host arrays and numba device arrays are copied over / wrapped) or a
    scalar (Python or NumPy; a 0-d host array counts as a NumPy scalar)."""
    if isinstance(x, DeviceArray) or _is_scalar(x):
        return x
    if isinstance(x, (list, tuple)):
        x = np.asarray(x)
    if isinstance(x, np.ndarray):
        return x[()] if x.ndim == 0 else asdevice(x)
    if _is_numba_array(x):
        return asdevice(x)
    raise TypeError(f"DeviceArray cannot operate with {type(x).__name__}")


def _as_array(x):
    """``_operand`` that always gives a DeviceArray."""
    x = _operand(x)
    return x if isinstance(x, DeviceArray) else asdevice(x)


def _as_shape(shape):
    if isinstance(shape, (int, np.integer)):
        return (int(shape),)
    return tuple(operator.index(n) for n in shape)


def _resolve_shape(shape, size):
    """``shape`` with its one -1 replaced to hold ``size`` elements."""
    shape = list(_as_shape(shape))
    unknown = [k for k, n in enumerate(shape) if n == -1]
    known = math.prod(n for n in shape if n != -1)
    if len(unknown) > 1:
        raise ValueError("can only specify one unknown dimension")
    if unknown and known and size % known == 0:
        shape[unknown[0]] = size // known
    if math.prod(shape) != size or any(n < 0 for n in shape):
        raise ValueError(f"cannot reshape array of size {size} into shape "
                         f"{tuple(shape)}")
    return tuple(shape)


def _fmt(shape):
    return "(" + ",".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def _broadcast_shape(*shapes, strict=True):
    """NumPy's broadcast of shapes; a ValueError naming all of them when they do not fit
    (``strict=False`` returns None instead)."""
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        if not strict:
            return None
        raise ValueError("operands could not be broadcast together with shapes "
                         + " ".join(_fmt(s) for s in shapes)) from None


def _is_contiguous(shape, strides):
    """True when the layout walks one contiguous run of elements in row-major order."""
    expected = 1
    for n, s in zip(reversed(shape), reversed(strides)):
        if n != 1:
            if s != expected:
                return False
            expected *= n
    return True


def _overlap(x, y):
    """True when the two DeviceArrays share memory."""
    xs, ys = _span(x._dev), _span(y._dev)
    return xs[0] < ys[1] and ys[0] < xs[1]


def _unaliased(x, out):
    """``x`` as the input of an elementwise kernel writing ``out``: itself when it does not
    share memory with out or is element for element the same, else a copy."""
    if not isinstance(x, DeviceArray) or not _overlap(x, out):
        return x
    if x.shape == out.shape and x.itemsize == out.itemsize and _span(x._dev) == _span(out._dev):
        return x
    return x.copy()


def _output(out, shape, dtype, name, broadcast=True):
    """The array a result of ``shape`` and ``dtype`` goes to: a new one, or ``out`` (a
    DeviceArray, or a tuple of one) when its shape fits (the result broadcast to it when
    ``broadcast``) and ``dtype`` casts to its dtype under 'same_kind'."""
    if isinstance(out, tuple):
        if len(out) != 1:
            raise TypeError(f"np.{name}: out must be one array")
        out = out[0]
    if out is None:
        return empty(shape, _check_dtype(dtype))
    if not isinstance(out, DeviceArray):
        raise TypeError(f"np.{name}: out must be a DeviceArray, got {type(out).__name__}")
    out._check_writable(f"np.{name}(..., out=)")
    full_shape = _broadcast_shape(shape, out.shape, strict=False) if broadcast else shape
    if full_shape != out.shape:
        raise ValueError(f"np.{name}: non-broadcastable output operand with shape "
                         f"{_fmt(out.shape)} doesn't match the broadcast shape {_fmt(shape)}")
    if not np.can_cast(dtype, out.dtype, "same_kind"):
        raise TypeError(f"Cannot cast ufunc '{name}' output from {np.dtype(dtype)!r} to "
                        f"{out.dtype!r} with casting rule 'same_kind'")
    return out


def _index_plan(shape, key):
    """(offset, shape, strides) in elements, relative to a C-contiguous array of ``shape``,
    of the selection ``key``: integers, slices, Ellipsis and None (newaxis)."""
    key = key if isinstance(key, tuple) else (key,)
    entries = []
    for k in key:
        if k is Ellipsis or k is None or isinstance(k, slice):
            entries.append(k)
        else:
            entries.append(_integer_index(k))
    used = sum(1 for k in entries if k is not None and k is not Ellipsis)
    ellipses = sum(1 for k in entries if k is Ellipsis)
    if ellipses > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if used > len(shape):
        raise IndexError(f"too many indices for array: array is {len(shape)}-dimensional, but "
                         f"{used} were indexed")
    fill = [slice(None)] * (len(shape) - used)
    if ellipses:
        at = next(i for i, k in enumerate(entries) if k is Ellipsis)
        entries[at:at + 1] = fill
    else:
        entries += fill
    strides = ew.c_strides(shape)
    offset, out_shape, out_strides, axis = 0, [], [], 0
    for k in entries:
        if k is None:
            out_shape.append(1)
            out_strides.append(0)
            continue
        n, stride = shape[axis], strides[axis]
        if isinstance(k, slice):
            start, stop, step = k.indices(n)
            length = len(range(start, stop, step))
            offset += start * stride if length else 0
            out_shape.append(length)
            out_strides.append(step * stride)
        else:
            if not -n <= k < n:
                raise IndexError(f"index {k} is out of bounds for axis {axis} with size {n}")
            offset += (k + n if k < 0 else k) * stride
        axis += 1
    return offset, tuple(out_shape), tuple(out_strides)


def _integer_index(k):
    """An integer index, or the errors NumPy gives (fancy indexing is not supported here)."""
    fancy = isinstance(k, (bool, np.bool_, list, DeviceArray)) or _is_numba_array(k) or (
        isinstance(k, np.ndarray) and (k.ndim > 0 or k.dtype == np.bool_))
    if fancy:
        raise TypeError("boolean and integer-array (fancy) indexing is not supported on the "
                        "device: gather with np.take_along_axis(a, index, axis), scatter-add "
                        "with add_at_along_axis, select with np.where(mask, a, b)")
    try:
        return operator.index(k)
    except TypeError:
        raise IndexError("only integers, slices (`:`), ellipsis (`...`) and numpy.newaxis "
                         "(`None`) are valid indices of a DeviceArray") from None


def _bool_only(x, operator_name):
    """``x`` when it is bool (an array or a scalar): ``~``, ``&`` and ``|`` are the logical
    operations there; the bitwise ones of integers are not implemented on the device."""
    dtype = getattr(x, "dtype", None)
    if not (isinstance(x, (bool, np.bool_)) or dtype == np.bool_):
        raise TypeError(f"the operator {operator_name} is implemented for bool DeviceArrays only "
                        f"(np.logical_not, np.logical_and, np.logical_or)")
    return x


def _dunder(ufunc, a, b, out=None):
    """``ufunc(a, b)`` for an operator; NotImplemented for operands it does not take."""
    other = b if isinstance(a, DeviceArray) else a
    if not (_is_scalar(other) or isinstance(other, (DeviceArray, np.ndarray, list, tuple))
            or _is_numba_array(other)):
        return NotImplemented
    return ufunc(a, b) if out is None else ufunc(a, b, out=out)
