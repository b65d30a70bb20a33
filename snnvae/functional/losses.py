"""Losses built from the differentiable tensor ops."""
from __future__ import annotations

from ..autograd import as_tensor
from . import tensor_ops as ops


def mse_loss(prediction, target):
    """mean((prediction - target)^2) over every element (the papers' reconstruction loss)."""
    prediction = as_tensor(prediction)
    target = target if hasattr(target, "data") else as_tensor(target, dtype=prediction.dtype)
    if prediction.shape != target.shape:
        raise ValueError(f"mse_loss: prediction {prediction.shape} and target {target.shape} "
                         f"must have the same shape")
    diff = prediction - target
    return ops.mean(diff * diff)


def psp_mmd_loss(q_z, p_z, tau_s=2.0):
    """FSVAE's default distance (called "MMD" in the paper, though it is no kernel MMD):

        mean over (T, N, C) of (PSP(mean_k q_z) - PSP(mean_k p_z))^2

    q_z, p_z: (T, N, C, k) spikes of posterior and prior. The PSP filter runs along time, so
    the loss compares smoothed firing probabilities. p_z is not detached: the prior learns
    through this term.
    """
    from .temporal import psp
    q_rate, p_rate = ops.mean(q_z, axis=-1), ops.mean(p_z, axis=-1)
    diff = psp(q_rate, tau_s) - psp(p_rate, tau_s)
    return ops.mean(diff * diff)


def bernoulli_kld_loss(q_z, p_z, smoothing=0.01):
    """KL(q || p) between the Bernoulli firing probabilities r = mean_k z, with the official
    +0.01 smoothing inside each ratio, summed over T and C and averaged over the batch:

        q log((q + s) / (p + s)) + (1 - q) log((1 - q + s) / (1 - p + s))
    """
    q, p = ops.mean(q_z, axis=-1), ops.mean(p_z, axis=-1)
    kl = (q * ops.log((q + smoothing) / (p + smoothing))
          + (1.0 - q) * ops.log((1.0 - q + smoothing) / (1.0 - p + smoothing)))
    return ops.sum(kl) * (1.0 / q.shape[1])
