"""A spiking decoder block in eval mode as one operation, for inference (reconstruction,
sampling): transposed convolution -> tdBN with the running statistics -> LIF.

For a time-first input x (T, N, C_in, H, W):

    y = conv_transpose2d(x, w, b)                                        (see ``conv``)
    o = LIF(scale gamma_c (y - running_mean_c) / sqrt(running_var_c + eps) + beta_c)

The values are those of ``td_batch_norm_lif(conv_transpose2d(x), ..., training=False)``. The
difference is the memory traffic: where the input is sparse, the CPU backend computes the
spikes in one pass over x and never stores y, the largest array of a decoder
(``kernels.scatter_block``). There is no backward: the op refuses inputs that would need a
gradient, so it runs under ``no_grad()`` or on tensors that do not require one.
"""
from __future__ import annotations

from .. import backend
from ..autograd import Tensor, as_tensor, records_graph
from ._checks import check_ndim, check_same_dtype
from .conv import check_conv_transpose
from .lif import LIFParams


def conv_transpose2d_tdbn_lif_eval(x, weight, bias, gamma, beta, running_mean, running_var, *,
                                   stride=1, padding=0, output_padding=0, scale=0.2,
                                   lif_params: LIFParams = LIFParams(), smooth=False, eps=1e-5):
    """Spikes (T, N, C_out, Ho, Wo) of the eval-mode block on x (T, N, C_in, H, W); weight
    (C_in, C_out, k, k), bias, gamma, beta and the running statistics (C_out,)."""
    arrays = _checked("conv_transpose2d_tdbn_lif_eval", x, weight, bias, gamma, beta,
                      running_mean, running_var, output_padding, stride)
    return Tensor(backend.kernels().conv_transpose2d_tdbn_lif_forward_eval(
        *_kernel_arguments(arrays, stride, padding, output_padding, scale, lif_params, smooth,
                           eps)))


def conv_transpose2d_tdbn_lif_membrane_eval(x, weight, bias, gamma, beta, running_mean,
                                            running_var, *, decay, stride=1, padding=0,
                                            output_padding=0, scale=0.2,
                                            lif_params: LIFParams = LIFParams(), smooth=False,
                                            eps=1e-5):
    """The block's spikes o summed over time as the membrane output sums:
    sum_t decay^(T-1-t) o_t (N, C_out, Ho, Wo). A linear read-out layer R (a convolution with
    bias b) followed by the membrane output then needs only this sum:

        sum_t decay^(T-1-t) (R o_t + b) = R(sum_t decay^(T-1-t) o_t) + b sum_t decay^(T-1-t)

    so the spikes, T times larger, need not be stored: the CPU backend sums them in the pass
    that makes them, where that pass runs (other backends and routes make the spikes, then sum
    them). The same values as ``membrane_output(conv_transpose2d_tdbn_lif_eval(...))``
    up to the order of the additions."""
    arrays = _checked("conv_transpose2d_tdbn_lif_membrane_eval", x, weight, bias, gamma, beta,
                      running_mean, running_var, output_padding, stride)
    return Tensor(backend.kernels().conv_transpose2d_tdbn_lif_membrane_eval(
        *_kernel_arguments(arrays, stride, padding, output_padding, scale, lif_params, smooth,
                           eps), float(decay)))


def _checked(op, x, weight, bias, gamma, beta, running_mean, running_var, output_padding,
             stride):
    """The arrays of the block's arguments, after checking that nothing needs a gradient and
    that the shapes and dtypes fit."""
    x, weight, gamma, beta = as_tensor(x), as_tensor(weight), as_tensor(gamma), as_tensor(beta)
    bias = None if bias is None else as_tensor(bias)
    running_mean, running_var = as_tensor(running_mean).data, as_tensor(running_var).data
    if records_graph(x, weight, bias, gamma, beta):
        raise RuntimeError(f"{op} has no backward: call it under snnvae.autograd.no_grad(), or "
                           f"use conv_transpose2d and then td_batch_norm_lif where gradients "
                           f"are needed")
    check_ndim(op, "input", x.data, (5,), "(T, N, C, H, W)")
    check_conv_transpose(op, x, weight, bias, output_padding, stride)
    C = weight.shape[1]
    shapes = {"gamma": gamma.shape, "beta": beta.shape, "running_mean": running_mean.shape,
              "running_var": running_var.shape}
    if any(s != (C,) for s in shapes.values()):
        raise ValueError(f"{op}: the weight of shape {weight.shape} has {C} output channels, so "
                         f"tdBN's values must have shape ({C},); got {shapes}")
    check_same_dtype(op, gamma=gamma.data, beta=beta.data, weight=weight.data,
                     running_mean=running_mean, running_var=running_var)
    return (x.data, weight.data, None if bias is None else bias.data, gamma.data, beta.data,
            running_mean, running_var)


def _kernel_arguments(arrays, stride, padding, output_padding, scale, lif_params, smooth, eps):
    x, w, b, gamma, beta, running_mean, running_var = arrays
    p = lif_params
    return (x, w, b, int(stride), int(padding), int(output_padding), gamma, beta, float(scale),
            running_mean, running_var, eps, p.vth, p.tau, p.aa, p.window_center, bool(smooth))
