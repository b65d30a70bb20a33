"""Maximum mean discrepancy between two sets of vectors (ESVAE's distance between the
posterior's and the prior's firing rates), built from the differentiable tensor ops.

x (M, D) and y (N, D) are samples of two distributions (ESVAE: rates r_q and r_p, D = latent
channels). With a kernel k, the squared MMD compares the mean embeddings:

    MMD^2 = mean_ij k(x_i, x_j) + mean_ij k(y_i, y_j) - mean_ij k(x_i, y_j) - mean_ij k(y_i, x_j)

(the biased estimator: the diagonals i = j are included, as in ESVAE's code). Pooling the rows
z = [x; y] (M + N rows) and the signs s_i = 1/M for rows of x, -1/N for rows of y, this is

    MMD^2 = sum_ij s_i s_j K_ij = s^T K s,        K_ij = k(z_i, z_j).

RBF kernel (ESVAE's default). Pairwise squared distances over the pooled rows,
d_ij = |z_i - z_j|^2 = |z_i|^2 + |z_j|^2 - 2 z_i . z_j (the diagonal set to exactly 0). The
bandwidth follows the data and is held constant for the gradient (detached):

    b = sum_ij d_ij / ((M + N)^2 - (M + N))          (mean distance between distinct rows)
    b_0 = b / 2^(5 // 2) = b / 4,    K = sum_{i=0..4} exp(-d / (b_0 2^i))

five kernels at bandwidths b/4, b/2, b, 2b, 4b, summed. ``bandwidth=`` fixes b instead of taking
it from the data (the official ``fix_sigma``); the gradient is then the exact derivative of the
returned value, which is what finite differences need.

Linear kernel k(a, b) = a . b: MMD^2 = |mean_i x_i - mean_j y_j|^2.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Tensor, as_tensor
from ..device import is_device
from . import tensor_ops as ops

KERNEL_MUL = 2.0   # ratio between neighbouring bandwidths
KERNEL_NUM = 5     # number of RBF kernels


def _check_pair(op, x, y):
    x, y = as_tensor(x), as_tensor(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"{op}: x and y must be (M, D) and (N, D) with the same D, got shapes "
                         f"{x.shape} and {y.shape}")
    if x.shape[0] + y.shape[0] < 2:
        raise ValueError(f"{op}: needs at least two rows in all, got {x.shape[0]} + {y.shape[0]}")
    return ops._pair(x, y)


def pairwise_sq_distances(z):
    """z (n, D) -> d (n, n), d_ij = |z_i - z_j|^2, differentiable; the diagonal is exactly 0."""
    z = as_tensor(z)
    sq = ops.sum(z * z, axis=1, keepdims=True)                  # (n, 1)
    d = sq + ops.transpose(sq) - ops.matmul(z, ops.transpose(z)) * 2.0
    off_diagonal = 1.0 - np.eye(z.shape[0], dtype=z.dtype)
    return d * off_diagonal


def rbf_bandwidth(d):
    """The data-dependent bandwidth b = sum_ij d_ij / (n^2 - n) of a distance matrix (a float;
    no gradient flows through it). For a matrix on the GPU it is a 0-d float64 DeviceArray:
    reading it on the host would stall every training step until the GPU has caught up."""
    d = d.data if isinstance(d, Tensor) else d
    d = d if is_device(d) else np.asarray(d)
    n = d.shape[0]
    total = d.sum(dtype=np.float64)
    return total / (n * n - n) if is_device(total) else float(total) / (n * n - n)


def rbf_kernels(z, bandwidth=None, kernel_mul=KERNEL_MUL, kernel_num=KERNEL_NUM):
    """Sum of the ``kernel_num`` RBF kernels on the rows of z (n, D) -> K (n, n).

    bandwidth: b, the mean squared distance (None: from the data, detached). The kernels use
    b / kernel_mul^(kernel_num // 2) * kernel_mul^i for i = 0 .. kernel_num - 1.
    """
    d = pairwise_sq_distances(z)
    b = rbf_bandwidth(d) if bandwidth is None else float(bandwidth)
    if bandwidth is not None and not b > 0:
        raise ValueError(f"rbf kernel bandwidth must be positive, got {bandwidth}")
    # b = 0: all rows equal, every d_ij = 0 and every kernel is 1 whatever b is
    if is_device(b):
        b = np.where(b > 0, b, 1.0)
    elif not b > 0:
        b = 1.0
    base = b / kernel_mul ** (kernel_num // 2)
    kernels = [ops.exp(d * (-1.0 / (base * kernel_mul ** i))) for i in range(kernel_num)]
    total = kernels[0]
    for k in kernels[1:]:
        total = total + k
    return total


def _signs(m, n, dtype):
    s = np.concatenate([np.full(m, 1.0 / m), np.full(n, -1.0 / n)]).astype(dtype)
    return np.outer(s, s)


def rbf_mmd(x, y, bandwidth=None, kernel_mul=KERNEL_MUL, kernel_num=KERNEL_NUM):
    """Squared MMD with ESVAE's sum of five RBF kernels between x (M, D) and y (N, D); a scalar
    Tensor. See the module docstring for the bandwidth (data-dependent and detached unless
    ``bandwidth`` is given)."""
    x, y = _check_pair("rbf_mmd", x, y)
    kernels = rbf_kernels(ops.concat([x, y], axis=0), bandwidth, kernel_mul, kernel_num)
    return ops.sum(kernels * _signs(x.shape[0], y.shape[0], kernels.dtype))


def linear_mmd(x, y):
    """Squared MMD with the linear kernel: |mean_i x_i - mean_j y_j|^2 for x (M, D), y (N, D)."""
    x, y = _check_pair("linear_mmd", x, y)
    delta = ops.mean(x, axis=0) - ops.mean(y, axis=0)
    return ops.sum(delta * delta)
