"""Batch normalisation with per-channel statistics, and its spiking form tdBN.

x is viewed as (M, C, S): every axis before the channel axis folds into M, every axis after it
into S. For tdBN on a time-first spiking tensor (T, N, C, H, W) the channel axis is 2, so the
statistics run over time, batch and space together (Zheng et al. 2021):

    mean_c, var_c  over the n = T*N*H*W values of channel c   (var biased, divided by n)
    y = scale * gamma_c * (x - mean_c) / sqrt(var_c + eps) + beta_c,    scale = alpha * Vth

Training mode also updates the running statistics in place (momentum m = 0.1):
    running_mean <- (1 - m) running_mean + m mean_c
    running_var  <- (1 - m) running_var  + m var_c * n / (n - 1)      (unbiased estimate)
Eval mode normalises with the running statistics instead, which are then constants.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..autograd import Function, as_tensor
from ..device import contiguous
from ._checks import check_float, check_same_dtype


def _as_mcs(x, channel_axis):
    m = int(np.prod(x.shape[:channel_axis]))
    return contiguous(x).reshape(m, x.shape[channel_axis], -1)


class BatchNormTrain(Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, scale, eps, channel_axis, stats_out):
        x3 = _as_mcs(x, channel_axis)
        y, xhat, invstd, mean, var = backend.kernels().tdbn_forward_train(x3, gamma, beta, scale, eps)
        stats_out.update(mean=mean, var=var, n=x3.shape[0] * x3.shape[2])
        ctx.save_for_backward(xhat, invstd, gamma, scale, x.shape)
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        xhat, invstd, gamma, scale, shape = ctx.saved
        gx, ggamma, gbeta = backend.kernels().tdbn_backward_train(
            g.reshape(xhat.shape), xhat, invstd, gamma, scale)
        return gx.reshape(shape), ggamma, gbeta, None, None, None, None


class BatchNormEval(Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, scale, eps, channel_axis, running_mean, running_var):
        x3 = _as_mcs(x, channel_axis)
        y, xhat, invstd = backend.kernels().tdbn_forward_eval(
            x3, gamma, beta, scale, running_mean, running_var, eps)
        ctx.save_for_backward(xhat, invstd, gamma, scale, x.shape)
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        xhat, invstd, gamma, scale, shape = ctx.saved
        gx, ggamma, gbeta = backend.kernels().tdbn_backward_eval(
            g.reshape(xhat.shape), xhat, invstd, gamma, scale)
        return gx.reshape(shape), ggamma, gbeta, None, None, None, None, None


def batch_norm(x, gamma, beta, running_mean, running_var, *, training, channel_axis=1,
               scale=1.0, momentum=0.1, eps=1e-5):
    """Normalise x per channel (see module docstring); updates running stats when training.

    running_mean, running_var: float arrays of shape (C,), updated in place in training mode.
    Returns a Tensor of x's shape.
    """
    x, gamma, beta = as_tensor(x), as_tensor(gamma), as_tensor(beta)
    check_float("batch_norm input", x.data)
    check_same_dtype("batch_norm", x=x.data, gamma=gamma.data, beta=beta.data)
    C = x.shape[channel_axis] if x.ndim > channel_axis else None
    if C is None or gamma.shape != (C,) or beta.shape != (C,) or running_mean.shape != (C,):
        raise ValueError(f"batch_norm: input of shape {x.shape} has {C} channels on axis "
                         f"{channel_axis}, but gamma/beta/running stats have shapes "
                         f"{gamma.shape}/{beta.shape}/{running_mean.shape}")
    if not training:
        return BatchNormEval.apply(x, gamma, beta, scale, eps, channel_axis, running_mean, running_var)
    stats = {}
    y = BatchNormTrain.apply(x, gamma, beta, scale, eps, channel_axis, stats)
    update_running_statistics(running_mean, running_var, stats["mean"], stats["var"],
                              stats["n"], momentum, x.shape)
    return y


def update_running_statistics(running_mean, running_var, mean, var, n, momentum, shape):
    """The in-place momentum update of the module docstring, from batch statistics of n values
    per channel (var biased). ``shape`` (the input's) only serves the error message."""
    if n < 2:
        raise ValueError(f"batch_norm in training mode needs more than one value per channel, "
                         f"got input shape {shape}")
    running_mean *= 1.0 - momentum
    running_mean += momentum * mean.astype(running_mean.dtype)
    running_var *= 1.0 - momentum
    running_var += momentum * var.astype(running_var.dtype) * (n / (n - 1))


def td_batch_norm(x, gamma, beta, running_mean, running_var, *, training, alpha=1.0, vth=0.2,
                  momentum=0.1, eps=1e-5):
    """tdBN on a time-first spiking tensor (T, N, C, ...): batch_norm over T, N and space with
    the output scaled by alpha * Vth, so that a unit-variance input reaches the threshold."""
    return batch_norm(x, gamma, beta, running_mean, running_var, training=training,
                      channel_axis=2, scale=alpha * vth, momentum=momentum, eps=eps)
