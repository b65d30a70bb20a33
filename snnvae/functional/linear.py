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


def update_linear_outputs(y, x_new, x_old, weight_t):
    """Move the outputs of a linear layer to a new input, in place, without gradient:

        y += (x_new - x_old) weight_t      y (R, F_out), x_new, x_old (R, F_in)

    where y = linear(x_old, weight, bias) before the call and weight_t = weight^T (F_in, F_out),
    contiguous. Event-driven on the CPU: one row of weight_t added per entry in which x_new
    and x_old differ, so an input with few changes (spikes of a layer re-run on a slightly
    changed input) costs a fraction of a dense product. Arrays in, y out; equal to
    linear(x_new, weight, bias) up to the order of the additions."""
    for name, a in (("y", y), ("x_new", x_new), ("x_old", x_old), ("weight_t", weight_t)):
        check_float(f"update_linear_outputs {name}", a)
    check_same_dtype("update_linear_outputs", y=y, x_new=x_new, x_old=x_old, weight_t=weight_t)
    if (x_new.ndim != 2 or x_new.shape != x_old.shape or weight_t.ndim != 2
            or weight_t.shape[0] != x_new.shape[1] or y.shape != (x_new.shape[0], weight_t.shape[1])):
        raise ValueError(f"update_linear_outputs: y {y.shape}, x_new {x_new.shape}, x_old "
                         f"{x_old.shape} and weight_t {weight_t.shape} do not fit: expected "
                         f"y (R, F_out), x_new and x_old (R, F_in), weight_t (F_in, F_out)")
    return backend.kernels().linear_delta_into(y, x_new, x_old, weight_t)
