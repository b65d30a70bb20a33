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
    x, weight, gamma, beta = as_tensor(x), as_tensor(weight), as_tensor(gamma), as_tensor(beta)
    bias = None if bias is None else as_tensor(bias)
    op = "conv_transpose2d_tdbn_lif_eval"
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
    p = lif_params
    o = backend.kernels().conv_transpose2d_tdbn_lif_forward_eval(
        x.data, weight.data, None if bias is None else bias.data, int(stride), int(padding),
        int(output_padding), gamma.data, beta.data, float(scale), running_mean, running_var,
        eps, p.vth, p.tau, p.aa, p.window_center, bool(smooth))
    return Tensor(o)
