"""Time-distributed linear layer: the same weights at every time step.

    y[..., o] = sum_i x[..., i] w[o, i] + b[o]

x may have any leading axes, e.g. (T, N, F_in); they are folded into rows for one GEMM.
"""
from __future__ import annotations

from .. import backend
from ..autograd import Function, as_tensor
from ._checks import check_float, check_same_dtype
from ._saved import keep_input, restore_input


class Linear(Function):
    @staticmethod
    def forward(ctx, x, w, b):
        k = backend.kernels()
        rows = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(keep_input(ctx, rows), w, b is not None, x.shape)
        y = k.linear_forward(rows, w, b)
        return y.reshape(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx, g):
        rows, w, has_bias, x_shape = ctx.saved
        gx, gw, gb = backend.kernels().linear_backward(g.reshape(-1, w.shape[0]),
                                                       restore_input(rows, w.dtype), w, has_bias)
        return gx.reshape(x_shape), gw, gb


def linear(x, weight, bias=None):
    """x (..., F_in), weight (F_out, F_in), bias (F_out,) -> (..., F_out)."""
    x, weight = as_tensor(x), as_tensor(weight)
    bias = None if bias is None else as_tensor(bias)
    check_float("linear input", x.data)
    check_same_dtype("linear", x=x.data, weight=weight.data, bias=None if bias is None else bias.data)
    if weight.ndim != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input has {x.shape[-1]} features (shape {x.shape}) but the "
                         f"weight of shape {weight.shape} expects {weight.shape[1] if weight.ndim == 2 else '?'}")
    return Linear.apply(x, weight, bias)
