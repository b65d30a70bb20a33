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

The arrays are NumPy arrays, or ``DeviceArray``s in GPU memory for a model moved there
(``Module.to_device("cuda")``, ``snnvae.device``): the same Function code serves both, since a
DeviceArray takes NumPy's functions and operators and runs them as CUDA kernels.
``Tensor.device`` says which; ``numpy()`` always returns a host copy.

``backward()`` visits nodes in reverse topological order and sums the gradients that reach a
tensor along different paths (gradient accumulation).

What the graph keeps alive. A result's ``_node`` is a ``Node(fn, ctx, parents, shape)``; its
``parents`` are the inputs' own Nodes (or the leaf Tensors themselves, which receive ``.grad``),
never the intermediate Tensors. So an intermediate array lives only as long as something
references it: the user's variables, or a ``ctx`` that saved it for backward. The float32
spikes of a fused tdBN -> LIF block, for instance, are freed as soon as the next layer has run
and saved its own compact copy (see ``functional._saved``).
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from .device import device_of, is_device, place_like, to_host

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
    """Scratch space of one Function call: saved arrays and which inputs need gradients
    (all False under ``no_grad``, where nothing is recorded and backward will not run)."""

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self.saved = ()

    def save_for_backward(self, *values):
        self.saved = values


class Node:
    """One recorded Function call: its Function class, its Context, and for each positional
    input the vertex gradients flow to (the input's own Node, a leaf Tensor that requires grad,
    or None). ``shape`` is that of the result, for checking the gradients that reach it.
    (A plain class, not a tuple: comparing or printing a Node must not walk the graph.)"""

    __slots__ = ("fn", "ctx", "parents", "shape")

    def __init__(self, fn, ctx, parents, shape):
        self.fn, self.ctx, self.parents, self.shape = fn, ctx, parents, shape

    def __repr__(self):
        return f"Node({self.fn.__name__}, shape={self.shape})"


def _vertex(t):
    """Where the gradient of Tensor t goes in the graph: its Node, or t itself for a leaf
    (None where no gradient is needed)."""
    if not t.requires_grad:
        return None
    return t if t._node is None else t._node


class Tensor:
    """An array with an optional gradient and a link to the Function that produced it."""

    __array_priority__ = 1000  # make ndarray + Tensor call Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False):
        if isinstance(data, Tensor):
            data = data.data
        array = data if is_device(data) else np.asarray(data)
        if array.dtype.kind in "biu" and requires_grad:
            raise TypeError(f"only floating-point tensors can require gradients, got {array.dtype}")
        if array.dtype.kind not in "fbiu":
            raise TypeError(f"unsupported dtype {array.dtype}; use float32 or float64")
        if array.dtype == np.float16:
            array = array.astype(np.float32)
        self.data = array
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._node = None  # the Node that produced this tensor (None for a leaf)

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
    def device(self) -> str:
        """"cuda" when the values live in GPU memory (a DeviceArray), else "cpu"."""
        return device_of(self.data)

    @property
    def is_leaf(self):
        return self._node is None

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        flag = ", requires_grad=True" if self.requires_grad else ""
        if is_device(self.data):
            return f"Tensor(<cuda, shape {self.shape}, {self.dtype}>{flag})"
        return f"Tensor({np.array2string(self.data, threshold=8)}{flag})"

    def numpy(self):
        """The values as a NumPy array (copied from the GPU for a tensor that lives there)."""
        return to_host(self.data)

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
        grad = grad.data if isinstance(grad, Tensor) else grad
        grad = place_like(grad, self.data).astype(self.dtype, copy=False)
        if grad.shape != self.shape:
            raise ValueError(f"grad of shape {grad.shape} given for a tensor of shape {self.shape}")

        root = _vertex(self)
        grads = {id(root): grad}
        for vertex in reversed(_topological_order(root)):
            g = grads.pop(id(vertex), None)
            if g is None:
                continue
            if isinstance(vertex, Tensor):                 # a leaf: keep its gradient
                vertex.grad = g if vertex.grad is None else vertex.grad + g
                continue
            input_grads = vertex.fn.backward(vertex.ctx, g)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            for parent, pg in zip(vertex.parents, input_grads):
                if parent is None or pg is None:
                    continue
                if pg.shape != parent.shape:
                    raise RuntimeError(f"{vertex.fn.__name__}.backward returned a gradient of "
                                       f"shape {pg.shape} for an input of shape {parent.shape}")
                key = id(parent)
                grads[key] = pg if key not in grads else grads[key] + pg


def _topological_order(root):
    """Graph vertices (Nodes and leaf Tensors) reachable from ``root``, parents before
    children."""
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        vertex, expanded = stack.pop()
        if expanded:
            order.append(vertex)
            continue
        if id(vertex) in seen:
            continue
        seen.add(id(vertex))
        stack.append((vertex, True))
        if isinstance(vertex, Node):
            for parent in vertex.parents:
                if parent is not None and id(parent) not in seen:
                    stack.append((parent, False))
    return order


def records_graph(*values) -> bool:
    """Whether a Function applied to ``values`` records a graph node: gradients are on and
    some Tensor among them requires one (what ``Function.apply`` checks)."""
    return is_grad_enabled() and any(isinstance(v, Tensor) and v.requires_grad for v in values)


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
        recording = is_grad_enabled()
        needs = tuple(recording and isinstance(a, Tensor) and a.requires_grad for a in args)
        ctx = Context(needs)
        raw = [a.data if isinstance(a, Tensor) else a for a in args]
        out = Tensor(cls.forward(ctx, *raw, **kwargs))
        if any(needs):
            out.requires_grad = True
            parents = tuple(_vertex(a) if isinstance(a, Tensor) else None for a in args)
            out._node = Node(cls, ctx, parents, out.shape)
        return out


def as_tensor(value, dtype=None) -> Tensor:
    """A Tensor view of ``value`` (returned unchanged if it already is one)."""
    if isinstance(value, Tensor):
        return value
    array = value if is_device(value) else np.asarray(value)
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    elif array.dtype.kind in "iub" or array.dtype == np.float16:
        array = array.astype(np.float32)
    return Tensor(array)
