"""Losses built from the differentiable tensor ops."""
from __future__ import annotations

from ..autograd import as_tensor
from . import tensor_ops as ops


def mse_loss(prediction, target):
    """mean((prediction - target)^2) over every element (the papers' reconstruction loss)."""
    prediction, target = as_tensor(prediction), as_tensor(target)
    if prediction.shape != target.shape:
        raise ValueError(f"mse_loss: prediction {prediction.shape} and target {target.shape} "
                         f"must have the same shape")
    diff = prediction - target
    return ops.mean(diff * diff)
