"""Time-distributed 2-D convolution and transposed convolution (weights shared over time).

Inputs are (T, N, C, H, W) (or (B, C, H, W) for non-spiking use). All leading axes are folded
into one batch axis, which for a contiguous time-first array is a free reshape; the official
code reaches the same result with a 3-D convolution whose kernel is (k, k, 1).

    conv:            y[b, o, i, j] = bias[o] + sum_{c,p,q} w[o, c, p, q] x[b, c, i s - pad + p, j s - pad + q]
    transposed conv: y[b, o, i s - pad + p, j s - pad + q] += x[b, c, i, j] w[c, o, p, q]

Output sizes: conv (H + 2 pad - k) // s + 1; transposed (H - 1) s - 2 pad + k + output_padding.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..autograd import Function, as_tensor
from ..device import contiguous
from ._checks import check_float, check_ndim, check_same_dtype
from ._saved import keep_input, restore_input

_LAYOUT = "(T, N, C, H, W) or (B, C, H, W)"


def _fold(x):
    return contiguous(x.reshape(-1, *x.shape[-3:]))


def _one_step_of_repeated(x):
    """x[0] of a time-first x (T, N, C, H, W) that holds the same images at every step through
    a stride-0 time axis (direct input coding makes it so: ``np.broadcast_to``), else None.
    A DeviceArray is always contiguous (its broadcast is materialised, its strides never 0):
    on the GPU the convolution runs at every step."""
    if x.ndim == 5 and x.shape[0] > 1 and x.strides[0] == 0:
        return contiguous(x[0])
    return None


class Conv2d(Function):
    """Weights shared over time. An input repeated over time (a stride-0 time axis) is
    convolved once and the result repeated: T times less work, the same values up to the order
    of the sums:

        y_t = conv(x_0) for every t;   dL/dw = conv weight grad of x_0 and sum_t dL/dy_t
    (the weight gradient is linear in dL/dy), dL/db likewise; dL/dx_t as for any input."""

    @staticmethod
    def forward(ctx, x, w, b, stride, padding):
        x0 = _one_step_of_repeated(x)
        xb = _fold(x) if x0 is None else x0
        ctx.save_for_backward(keep_input(ctx, xb), w, b is not None, stride, padding, x.shape,
                              x0 is not None)
        y = backend.kernels().conv2d_forward(xb, w, b, stride, padding)
        if x0 is not None:
            return contiguous(np.broadcast_to(y, (x.shape[0], *y.shape)))
        return y.reshape(*x.shape[:-3], *y.shape[1:])

    @staticmethod
    def backward(ctx, g):
        xb, w, has_bias, stride, padding, x_shape, repeated = ctx.saved
        k, x_kept = backend.kernels(), restore_input(xb, w.dtype)
        if repeated and not ctx.needs_input_grad[0]:       # the image: weight gradients only
            _, gw, gb = k.conv2d_backward(contiguous(g.sum(axis=0)), x_kept, w,
                                          stride, padding, has_bias)
            return None, gw, gb, None, None
        if repeated:
            x_kept = _fold(np.broadcast_to(x_kept, x_shape))
        gx, gw, gb = k.conv2d_backward(_fold(g), x_kept, w, stride, padding, has_bias)
        return gx.reshape(x_shape), gw, gb, None, None


class ConvTranspose2d(Function):
    @staticmethod
    def forward(ctx, x, w, b, stride, padding, output_padding):
        xb = _fold(x)
        ctx.save_for_backward(keep_input(ctx, xb), w, b is not None, stride, padding, x.shape)
        y = backend.kernels().conv_transpose2d_forward(xb, w, b, stride, padding, output_padding)
        return y.reshape(*x.shape[:-3], *y.shape[1:])

    @staticmethod
    def backward(ctx, g):
        xb, w, has_bias, stride, padding, x_shape = ctx.saved
        gx, gw, gb = backend.kernels().conv_transpose2d_backward(
            _fold(g), restore_input(xb, w.dtype), w, stride, padding, has_bias)
        return gx.reshape(x_shape), gw, gb, None, None, None


def _check(op, x, weight, bias, channel_axis):
    check_float(f"{op} input", x.data)
    check_same_dtype(op, x=x.data, weight=weight.data, bias=None if bias is None else bias.data)
    check_ndim(op, "input", x.data, (4, 5), _LAYOUT)
    if weight.ndim != 4:
        raise ValueError(f"{op}: weight must have 4 axes, got shape {weight.shape}")
    if x.shape[-3] != weight.shape[channel_axis]:
        raise ValueError(f"{op}: input has {x.shape[-3]} channels (shape {x.shape}) but the "
                         f"weight of shape {weight.shape} expects {weight.shape[channel_axis]}")


def check_conv_transpose(op, x, weight, bias, output_padding, stride):
    """The checks of a transposed convolution's arguments (Tensors), with clear messages."""
    _check(op, x, weight, bias, channel_axis=0)
    if not 0 <= output_padding < max(stride, 1):
        raise ValueError(f"{op}: output_padding must be smaller than stride "
                         f"(got output_padding={output_padding}, stride={stride})")


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """x (T, N, C_in, H, W), weight (C_out, C_in, kh, kw) -> (T, N, C_out, Ho, Wo)."""
    x, weight = as_tensor(x), as_tensor(weight)
    bias = None if bias is None else as_tensor(bias)
    _check("conv2d", x, weight, bias, channel_axis=1)
    if min(x.shape[-2] + 2 * padding, x.shape[-1] + 2 * padding) < weight.shape[-1]:
        raise ValueError(f"conv2d: the {weight.shape[-2:]} kernel is larger than the padded "
                         f"input {x.shape[-2:]} (padding {padding})")
    return Conv2d.apply(x, weight, bias, int(stride), int(padding))


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0):
    """x (T, N, C_in, H, W), weight (C_in, C_out, kh, kw) -> (T, N, C_out, Ho, Wo)."""
    x, weight = as_tensor(x), as_tensor(weight)
    bias = None if bias is None else as_tensor(bias)
    check_conv_transpose("conv_transpose2d", x, weight, bias, output_padding, stride)
    return ConvTranspose2d.apply(x, weight, bias, int(stride), int(padding), int(output_padding))
