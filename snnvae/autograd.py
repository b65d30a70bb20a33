"""A minimal reverse-mode autograd over NumPy arrays.

A ``Tensor`` holds an array (``.data``), a flag ``requires_grad`` and, after ``backward()``,
its gradient ``.grad`` (leaves only, as in PyTorch). A ``Function`` is one differentiable
operation with a hand-written ``forward(ctx, ...)`` and ``backward(ctx, grad_out)``; the
``ctx`` carries what backward needs. Functions here are coarse on purpose: a LIF layer over all
T steps is a single node whose backward is the whole BPTT recurrence, so the graph of a spiking
network has a few dozen nodes, not millions.

    class Square(Function):
        @staticmethod
        def forward(ctx, x):            # x: np.ndarray
            ctx.save_for_backward(x)
            return x * x
        @staticmethod
        def backward(ctx, g):           # g: dL/dy, an np.ndarray
            (x,) = ctx.saved
            return (2 * x * g,)         # one gradient per positional input (None if not needed)

    y = Square.apply(t)                 # t: Tensor -> y: Tensor linked to t

``backward()`` visits nodes in reverse topological order and sums the gradients that reach a
tensor along different paths (gradient accumulation).
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "grad_enabled", True)


@contextlib.contextmanager
def no_grad():
    """Inside this block new results record no graph (inference, optimiser updates)."""
    previous = is_grad_enabled()
    _state.grad_enabled = False
    try:
        yield
    finally:
        _state.grad_enabled = previous


@contextlib.contextmanager
def enable_grad():
    previous = is_grad_enabled()
    _state.grad_enabled = True
    try:
        yield
    finally:
        _state.grad_enabled = previous


class Context:
    """Scratch space of one Function call: saved arrays and which inputs need gradients."""

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self.saved = ()

    def save_for_backward(self, *values):
        self.saved = values


class Tensor:
    """An array with an optional gradient and a link to the Function that produced it."""

    __array_priority__ = 1000  # make ndarray + Tensor call Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False):
        if isinstance(data, Tensor):
            data = data.data
        array = np.asarray(data)
        if array.dtype.kind in "biu" and requires_grad:
            raise TypeError(f"only floating-point tensors can require gradients, got {array.dtype}")
        if array.dtype.kind not in "fbiu":
            raise TypeError(f"unsupported dtype {array.dtype}; use float32 or float64")
        if array.dtype == np.float16:
            array = array.astype(np.float32)
        self.data = array
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._node = None  # (Function class, Context, parent tensors by position)

    # --- basic facts -------------------------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    @property
    def is_leaf(self):
        return self._node is None

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        flag = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, threshold=8)}{flag})"

    def numpy(self):
        return self.data

    def item(self):
        return self.data.item()

    def detach(self) -> "Tensor":
        """The same values, cut from the graph: no gradient flows back through the result."""
        return Tensor(self.data)

    def zero_grad(self):
        self.grad = None

    # --- the backward pass ---------------------------------------------------------------------
    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        ``grad`` is dL/d(self); it defaults to 1 for a scalar.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad: "
                               "no input of the computation had requires_grad=True")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without an argument needs a scalar, got shape "
                                   f"{self.shape}; pass grad=dL/dself of that shape")
            grad = np.ones_like(self.data)
        grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"grad of shape {grad.shape} given for a tensor of shape {self.shape}")

        order = _topological_order(self)
        grads = {id(self): grad}
        for tensor in reversed(order):
            g = grads.pop(id(tensor), None)
            if g is None:
                continue
            if tensor._node is None:
                tensor.grad = g if tensor.grad is None else tensor.grad + g
                continue
            fn, ctx, parents = tensor._node
            input_grads = fn.backward(ctx, g)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            for parent, pg in zip(parents, input_grads):
                if parent is None or pg is None or not parent.requires_grad:
                    continue
                if pg.shape != parent.shape:
                    raise RuntimeError(f"{fn.__name__}.backward returned a gradient of shape "
                                       f"{pg.shape} for an input of shape {parent.shape}")
                key = id(parent)
                grads[key] = pg if key not in grads else grads[key] + pg


def _topological_order(root):
    """Tensors reachable from ``root`` through recorded nodes, parents before children."""
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        tensor, expanded = stack.pop()
        if expanded:
            order.append(tensor)
            continue
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        stack.append((tensor, True))
        if tensor._node is not None:
            for parent in tensor._node[2]:
                if parent is not None and parent.requires_grad and id(parent) not in seen:
                    stack.append((parent, False))
    return order


class Function:
    """Base class of differentiable operations; see the module docstring."""

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad_out):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs) -> Tensor:
        needs = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        ctx = Context(needs)
        raw = [a.data if isinstance(a, Tensor) else a for a in args]
        out = Tensor(cls.forward(ctx, *raw, **kwargs))
        if is_grad_enabled() and any(needs):
            out.requires_grad = True
            parents = tuple(a if isinstance(a, Tensor) else None for a in args)
            out._node = (cls, ctx, parents)
        return out


def as_tensor(value, dtype=None) -> Tensor:
    """A Tensor view of ``value`` (returned unchanged if it already is one)."""
    if isinstance(value, Tensor):
        return value
    array = np.asarray(value)
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    elif array.dtype.kind in "iub" or array.dtype == np.float16:
        array = array.astype(np.float32)
    return Tensor(array)
