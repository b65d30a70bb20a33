"""Differentiable elementwise, shape and reduction operations on Tensors.

Each op is a ``Function`` whose backward is its derivative written out. Elementwise binary ops
broadcast like NumPy; their backward sums the gradient over the broadcast axes
(``unbroadcast``) so that every input gets a gradient of its own shape.

The arithmetic operators of ``Tensor`` (``+ - * / ** @``, indexing, ``.sum()`` ...) are bound
to these functions at the bottom of this file.

The same code runs on tensors that live on the GPU: their arrays are ``DeviceArray``s, which
implement NumPy's operators and functions with CUDA kernels (``snnvae.device``). Arrays created
here take their input's place through ``like=``.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function, Tensor, as_tensor
from ..device import is_device, place_like


def unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape``: the adjoint of NumPy broadcasting."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


def _pair(a, b):
    """Two Tensors; a constant (Python number or array) takes the dtype of the Tensor it meets,
    so 1.0 - x stays float32 for a float32 x (as NumPy treats Python scalars)."""
    if isinstance(a, Tensor) and not isinstance(b, Tensor):
        return a, as_tensor(b, dtype=a.dtype)
    if isinstance(b, Tensor) and not isinstance(a, Tensor):
        return as_tensor(a, dtype=b.dtype), b
    a, b = as_tensor(a), as_tensor(b)
    if a.dtype != b.dtype and a.dtype.kind == b.dtype.kind == "f":
        raise TypeError(f"cannot combine a {a.dtype} tensor with a {b.dtype} tensor (shapes "
                        f"{a.shape} and {b.shape}); cast one of them, e.g. model.to(np.float64) "
                        f"or Tensor(array.astype(np.float32))")
    return a, b


# --- elementwise binary ------------------------------------------------------------------------


class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a.shape, b.shape)
        return a + b

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.saved
        return unbroadcast(g, sa), unbroadcast(g, sb)


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a.shape, b.shape)
        return a - b

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.saved
        return unbroadcast(g, sa), unbroadcast(-g, sb)


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        ga = unbroadcast(g * b, a.shape) if ctx.needs_input_grad[0] else None
        gb = unbroadcast(g * a, b.shape) if ctx.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        ga = unbroadcast(g / b, a.shape) if ctx.needs_input_grad[0] else None
        gb = unbroadcast(-g * a / (b * b), b.shape) if ctx.needs_input_grad[1] else None
        return ga, gb


class Maximum(Function):
    """max(a, b); the gradient goes to the larger input (to ``a`` on ties)."""

    @staticmethod
    def forward(ctx, a, b):
        take_a = a >= b
        ctx.save_for_backward(take_a, a.shape, b.shape)
        return np.where(take_a, a, b)

    @staticmethod
    def backward(ctx, g):
        take_a, sa, sb = ctx.saved
        return unbroadcast(np.where(take_a, g, 0), sa), unbroadcast(np.where(take_a, 0, g), sb)


class MatMul(Function):
    """a @ b for a (..., n, k) and b (..., k, m), batch axes broadcast."""

    @staticmethod
    def forward(ctx, a, b):
        if a.ndim < 2 or b.ndim < 2:
            raise ValueError(f"matmul needs operands with at least 2 axes, got shapes "
                             f"{a.shape} and {b.shape}; reshape vectors to (1, n) or (n, 1)")
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul shape mismatch: {a.shape} @ {b.shape} "
                             f"(inner sizes {a.shape[-1]} and {b.shape[-2]} differ)")
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        ga = unbroadcast(g @ np.swapaxes(b, -1, -2), a.shape) if ctx.needs_input_grad[0] else None
        gb = unbroadcast(np.swapaxes(a, -1, -2) @ g, b.shape) if ctx.needs_input_grad[1] else None
        return ga, gb


# --- elementwise unary -------------------------------------------------------------------------


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, g):
        return (-g,)


class Pow(Function):
    """a ** p for a constant exponent p."""

    @staticmethod
    def forward(ctx, a, p):
        ctx.save_for_backward(a, p)
        return a ** p

    @staticmethod
    def backward(ctx, g):
        a, p = ctx.saved
        return g * p * a ** (p - 1), None


class Exp(Function):
    @staticmethod
    def forward(ctx, a):
        y = np.exp(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return (g * y,)


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.log(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved
        return (g / a,)


class Tanh(Function):
    @staticmethod
    def forward(ctx, a):
        y = np.tanh(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return (g * (1 - y * y),)


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, a):
        # stable for large |a|: with e = exp(-|a|) <= 1, sigmoid = 1/(1+e) (a >= 0) or e/(1+e)
        e = np.exp(-np.abs(a))
        y = (np.where(a >= 0, 1.0, e) / (1.0 + e)).astype(a.dtype, copy=False)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return (g * y * (1 - y),)


class LeakyReLU(Function):
    @staticmethod
    def forward(ctx, a, slope):
        positive = a > 0
        ctx.save_for_backward(positive, slope)
        return np.where(positive, a, slope * a).astype(a.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        positive, slope = ctx.saved
        return np.where(positive, g, slope * g).astype(g.dtype, copy=False), None


class Abs(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(np.sign(a))
        return np.abs(a)

    @staticmethod
    def backward(ctx, g):
        (sign,) = ctx.saved
        return (g * sign,)


class Clip(Function):
    """clip(a, lo, hi); gradient 1 strictly inside (lo, hi), 0 outside."""

    @staticmethod
    def forward(ctx, a, lo, hi):
        ctx.save_for_backward((a > lo) & (a < hi))
        return np.clip(a, lo, hi)

    @staticmethod
    def backward(ctx, g):
        (inside,) = ctx.saved
        return g * inside, None, None


# --- shapes --------------------------------------------------------------------------------------


class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.save_for_backward(a.shape)
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        (shape,) = ctx.saved
        return g.reshape(shape), None


class Permute(Function):
    @staticmethod
    def forward(ctx, a, axes):
        ctx.save_for_backward(axes)
        return np.transpose(a, axes)

    @staticmethod
    def backward(ctx, g):
        (axes,) = ctx.saved
        return np.transpose(g, np.argsort(axes)), None


def _zeros_beside(g, shape):
    """Zeros of ``shape`` in g's dtype, on g's side (g may be a NumPy scalar: a 0-d result
    times a 0-d result is one, and ``like=`` takes arrays only)."""
    if is_device(g):
        return np.zeros(shape, dtype=g.dtype, like=g)
    return np.zeros(shape, dtype=np.result_type(g))


class GetItem(Function):
    """a[index] for any NumPy index; backward scatters (and adds repeated positions)."""

    @staticmethod
    def forward(ctx, a, index):
        ctx.save_for_backward(a.shape, a.dtype, index)
        return a[index]

    @staticmethod
    def backward(ctx, g):
        shape, dtype, index = ctx.saved
        full = _zeros_beside(g, shape)
        if is_device(g):       # basic indexing only there: no position is selected twice
            full[index] = g
        else:
            np.add.at(full, index, g)
        return full, None


class Gather(Function):
    """np.take_along_axis(a, index, axis): out[..., i, ...] = a[..., index[..., i, ...], ...]."""

    @staticmethod
    def forward(ctx, a, index, axis):
        index = place_like(index, a)       # copied to the GPU once, for forward and backward
        ctx.save_for_backward(a.shape, index, axis)
        return np.take_along_axis(a, index, axis=axis)

    @staticmethod
    def backward(ctx, g):
        shape, index, axis = ctx.saved
        full = _zeros_beside(g, shape)
        if is_device(g):
            from ..kernels.cuda.array import add_at_along_axis
            add_at_along_axis(full, index, g, axis)
            return full, None, None
        where = list(np.indices(index.shape, sparse=True))
        where[axis] = index
        np.add.at(full, tuple(where), g)
        return full, None, None


class Concat(Function):
    @staticmethod
    def forward(ctx, axis, *arrays):
        ctx.save_for_backward(axis, [a.shape[axis] for a in arrays])
        return np.concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, g):
        axis, sizes = ctx.saved
        return (None, *np.split(g, np.cumsum(sizes)[:-1], axis=axis))


# --- reductions ----------------------------------------------------------------------------------


def _normalise_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(a % ndim for a in axis)


class Sum(Function):
    @staticmethod
    def forward(ctx, a, axis, keepdims):
        axes = _normalise_axes(axis, a.ndim)
        ctx.save_for_backward(a.shape, axes, keepdims)
        total = a.sum(axis=axes, keepdims=keepdims)
        return total if is_device(total) else np.asarray(total)

    @staticmethod
    def backward(ctx, g):
        shape, axes, keepdims = ctx.saved
        if not keepdims:
            g = np.expand_dims(g, axes)
        full = np.broadcast_to(g, shape)
        # NumPy's broadcast is a read-only view; a DeviceArray's, when it repeats anything,
        # is already a new array
        return (full if is_device(full) and full.size != g.size else full.copy()), None, None


# --- public functions ----------------------------------------------------------------------------


def add(a, b):
    return Add.apply(*_pair(a, b))


def sub(a, b):
    return Sub.apply(*_pair(a, b))


def mul(a, b):
    return Mul.apply(*_pair(a, b))


def div(a, b):
    return Div.apply(*_pair(a, b))


def maximum(a, b):
    return Maximum.apply(*_pair(a, b))


def matmul(a, b):
    return MatMul.apply(*_pair(a, b))


def neg(a):
    return Neg.apply(as_tensor(a))


def pow(a, p):
    return Pow.apply(as_tensor(a), p)


def exp(a):
    return Exp.apply(as_tensor(a))


def log(a):
    return Log.apply(as_tensor(a))


def tanh(a):
    return Tanh.apply(as_tensor(a))


def sigmoid(a):
    return Sigmoid.apply(as_tensor(a))


def leaky_relu(a, negative_slope=0.01):
    return LeakyReLU.apply(as_tensor(a), negative_slope)


def abs(a):  # noqa: A001 - mirrors numpy.abs
    return Abs.apply(as_tensor(a))


def clip(a, lo, hi):
    return Clip.apply(as_tensor(a), lo, hi)


def reshape(a, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return Reshape.apply(as_tensor(a), shape)


def permute(a, *axes):
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    a = as_tensor(a)
    if sorted(a_ % a.ndim for a_ in axes) != list(range(a.ndim)):
        raise ValueError(f"permute needs each of the {a.ndim} axes once, got {axes}")
    return Permute.apply(a, tuple(a_ % a.ndim for a_ in axes))


def transpose(a, axis0=-2, axis1=-1):
    a = as_tensor(a)
    axes = list(range(a.ndim))
    axes[axis0], axes[axis1] = axes[axis1], axes[axis0]
    return Permute.apply(a, tuple(axes))


def getitem(a, index):
    if isinstance(index, Tensor):
        index = index.data
    return GetItem.apply(as_tensor(a), index)


def gather(a, index, axis):
    """Pick ``a`` along ``axis`` at integer positions ``index`` (np.take_along_axis)."""
    index = np.asarray(index.data if isinstance(index, Tensor) else index)
    if index.dtype.kind not in "iu":
        raise TypeError(f"gather index must hold integers, got dtype {index.dtype}")
    return Gather.apply(as_tensor(a), index, axis)


def concat(tensors, axis=0):
    tensors = [as_tensor(t) for t in tensors]
    return Concat.apply(axis, *tensors)


def sum(a, axis=None, keepdims=False):  # noqa: A001 - mirrors numpy.sum
    return Sum.apply(as_tensor(a), axis, keepdims)


def mean(a, axis=None, keepdims=False):
    a = as_tensor(a)
    count = int(np.prod([a.shape[i] for i in _normalise_axes(axis, a.ndim)]))
    return mul(sum(a, axis, keepdims), 1.0 / count)


def detach(a):
    return as_tensor(a).detach()


# --- Tensor operators ----------------------------------------------------------------------------

Tensor.__add__ = lambda self, other: add(self, other)
Tensor.__radd__ = lambda self, other: add(other, self)
Tensor.__sub__ = lambda self, other: sub(self, other)
Tensor.__rsub__ = lambda self, other: sub(other, self)
Tensor.__mul__ = lambda self, other: mul(self, other)
Tensor.__rmul__ = lambda self, other: mul(other, self)
Tensor.__truediv__ = lambda self, other: div(self, other)
Tensor.__rtruediv__ = lambda self, other: div(other, self)
Tensor.__matmul__ = lambda self, other: matmul(self, other)
Tensor.__rmatmul__ = lambda self, other: matmul(other, self)
Tensor.__neg__ = lambda self: neg(self)
Tensor.__pow__ = lambda self, p: pow(self, p)
Tensor.__getitem__ = lambda self, index: getitem(self, index)
Tensor.sum = lambda self, axis=None, keepdims=False: sum(self, axis, keepdims)
Tensor.mean = lambda self, axis=None, keepdims=False: mean(self, axis, keepdims)
Tensor.reshape = lambda self, *shape: reshape(self, *shape)
Tensor.permute = lambda self, *axes: permute(self, *axes)
Tensor.transpose = lambda self, a0=-2, a1=-1: transpose(self, a0, a1)
Tensor.exp = lambda self: exp(self)
Tensor.log = lambda self: log(self)
Tensor.tanh = lambda self: tanh(self)
Tensor.sigmoid = lambda self: sigmoid(self)
Tensor.T = property(lambda self: transpose(self))
