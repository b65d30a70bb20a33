"""The diagonal Gaussian latent of the ANN VAE: reparameterised sampling and its KL to N(0, I).

mu, logvar: (N, D) Tensors, the posterior q(z | x) = N(mu, diag(exp(logvar))).

Reparameterisation (Kingma and Welling 2014): a sample is a differentiable function of the
parameters and of noise that does not depend on them,

    z = mu + exp(logvar / 2) * eps,        eps ~ N(0, I) drawn from a numpy Generator
    dz/dmu = 1,    dz/dlogvar = exp(logvar / 2) * eps / 2

KL of each row against the standard normal prior, in closed form, summed over the D latent
dimensions and averaged over the N rows (the papers' ANN baseline):

    KL = mean_n sum_d  (mu^2 + exp(logvar) - 1 - logvar) / 2
    dKL/dmu = mu / N,    dKL/dlogvar = (exp(logvar) - 1) / (2 N)
"""
from __future__ import annotations

import numpy as np

from ..autograd import as_tensor
from . import tensor_ops as ops
from ._checks import check_float, check_same_dtype


def _check_pair(op, mu, logvar):
    check_float(f"{op} mu", mu.data)
    check_same_dtype(op, mu=mu.data, logvar=logvar.data)
    if mu.shape != logvar.shape or mu.ndim != 2:
        raise ValueError(f"{op}: mu and logvar must both be (N, D) with the same shape, got "
                         f"{mu.shape} and {logvar.shape}")


def gaussian_kl_loss(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, 1)) summed over the latent axis, mean over the batch."""
    mu, logvar = as_tensor(mu), as_tensor(logvar)
    _check_pair("gaussian_kl_loss", mu, logvar)
    per_element = (mu * mu + ops.exp(logvar) - logvar - 1.0) * 0.5
    return ops.sum(per_element) * (1.0 / mu.shape[0])


def reparameterize(mu, logvar, rng: np.random.Generator | None = None, *, eps=None):
    """z = mu + exp(logvar / 2) * eps, with eps ~ N(0, I) drawn from ``rng`` (in mu's dtype), or
    the given ``eps`` array (e.g. to hold the noise fixed in a gradient check). -> (N, D)."""
    mu, logvar = as_tensor(mu), as_tensor(logvar)
    _check_pair("reparameterize", mu, logvar)
    if (rng is None) == (eps is None):
        raise ValueError("reparameterize needs exactly one of rng=np.random.Generator (to draw "
                         "the noise) or eps=array (the noise itself)")
    if eps is None:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"reparameterize: rng must be a numpy.random.Generator "
                            f"(np.random.default_rng(seed)), got {type(rng).__name__}")
        eps = rng.standard_normal(mu.shape, dtype=mu.dtype)
    eps = np.asarray(eps)
    if eps.shape != mu.shape:
        raise ValueError(f"reparameterize: eps has shape {eps.shape}, mu has {mu.shape}")
    return mu + ops.exp(logvar * 0.5) * eps.astype(mu.dtype, copy=False)
