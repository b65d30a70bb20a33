"""ESVAE's latent: Poisson spikes sampled from firing rates, and the prior's sample layer.

Shapes (time first): C = latent channels.
    r          (N, C)      firing rates in [0, 1] (posterior: mean over T of the spikes before
                           the latent; prior: sigmoid of a linear layer on Gaussian noise)
    U          (T, N, C)   uniforms U(0, 1), fresh at every step
    z          (T, N, C)   sampled latent spikes

Poisson (more exactly Bernoulli-per-step) spike sampling. At every step each latent neuron
fires with probability r:

    z_t = 1[r > U_t],    U_t ~ U(0, 1)   =>   P(z_t = 1) = r,   E[sum_t z_t] = T r.

Why it is reparameterisable. The randomness U does not depend on r, so z is a deterministic
function of (r, U), a step in r - U. Its derivative is replaced by a rectangular surrogate,
as for the LIF spike:

    dz_t / dr = 1[|r - U_t| < aa] / (2 aa),        aa = 0.5 (ESVAE: a window of width 1, height 1)

Averaged over U the surrogate is close to the true derivative of the expectation:
E_U[1[|r - U| < 0.5]] = P(r - 0.5 < U < r + 0.5) = min(r + 0.5, 1) - max(r - 0.5, 0), which is
1 at r = 0.5 and 0.5 at r = 0 or 1, while dE[z]/dr = 1 everywhere (lesson 10 measures it).

Modes (the ``spike_mode`` of ``snnvae.functional.lif`` decides for the whole network):
* ``"spike"``: Heaviside forward, the surrogate backward with the uniforms kept from forward.
* ``"smooth"``: the stand-in h(r - U) = clip((r - U) / (2 aa) + 1/2, 0, 1) forward and
  backward. Its exact derivative is the surrogate, so central differences check it.
* ``"straight_through"``: Heaviside forward, backward = autograd's derivative of h.

The uniforms come from an explicit ``numpy.random.Generator`` (``draw_uniforms``) or are passed
in (``uniforms=``), e.g. those the official code drew (../shared/golden/esvae_pieces.npz). For
rates on the GPU they are drawn on the host and copied over, so a CPU and a GPU run with one
seed draw the same numbers.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..autograd import Function, Tensor, as_tensor, enable_grad
from ..device import place_like
from ..functional.lif import SPIKE_MODES, current_spike_mode
from ..functional.tensor_ops import unbroadcast
from ..nn import Linear, Module

WINDOW = 0.5   # ESVAE's surrogate half-width aa: window |r - U| < 0.5, height 1 / (2 aa) = 1


def draw_uniforms(rng: np.random.Generator, shape, dtype=np.float64):
    """U[0, 1) of ``shape`` from ``rng``, drawn directly in ``dtype`` (float32 or float64), so
    that no float64 draw rounds up to 1.0 in float32."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"Poisson sampling needs rng=np.random.Generator for its uniforms, got "
                        f"{type(rng).__name__}")
    return rng.random(shape, dtype=np.dtype(dtype).type)


def smooth_sample(rates, uniforms, aa=WINDOW):
    """The stand-in h(r - U) = clip((r - U) / (2 aa) + 1/2, 0, 1), from autograd primitives."""
    return F.clip((as_tensor(rates) - uniforms) * (1.0 / (2.0 * aa)) + 0.5, 0.0, 1.0)


class PoissonSpike(Function):
    """z = 1[r > U] with r broadcast to U's shape; backward g * 1[|r - U| < aa] / (2 aa), summed
    back over the broadcast axes (e.g. over T when r is (N, C) and U is (T, N, C))."""

    @staticmethod
    def forward(ctx, rates, uniforms, aa):
        ctx.save_for_backward(rates, uniforms, aa)
        return (rates > uniforms).astype(rates.dtype)

    @staticmethod
    def backward(ctx, g):
        rates, uniforms, aa = ctx.saved
        window = np.abs(rates - uniforms) < aa
        return unbroadcast(np.where(window, g * (1.0 / (2.0 * aa)), 0.0).astype(g.dtype),
                           rates.shape), None, None


class StraightThroughPoissonSpike(Function):
    """Heaviside forward; backward = autograd's derivative of ``smooth_sample`` at (r, U)."""

    @staticmethod
    def forward(ctx, rates, uniforms, aa):
        ctx.save_for_backward(rates, uniforms, aa)
        return (rates > uniforms).astype(rates.dtype)

    @staticmethod
    def backward(ctx, g):
        rates, uniforms, aa = ctx.saved
        leaf = Tensor(rates, requires_grad=True)
        with enable_grad():
            smooth_sample(leaf, Tensor(uniforms), aa).backward(g)
        return leaf.grad, None, None


def poisson_spikes(rates, uniforms, aa=WINDOW, mode=None):
    """Spikes 1[r > U] with the surrogate gradient dz/dr = 1[|r - U| < aa] / (2 aa).

    rates: Tensor or array that broadcasts to ``uniforms``' shape, e.g. (N, C) for uniforms
    (T, N, C): the same rate at every step. uniforms: array in [0, 1) (kept for backward).
    mode: None (the active ``spike_mode``), 'spike', 'smooth' or 'straight_through'.
    Returns a Tensor of ``uniforms``' shape, in the rates' dtype.
    """
    rates = as_tensor(rates)
    uniforms = uniforms.data if isinstance(uniforms, Tensor) else uniforms
    uniforms = place_like(uniforms, rates.data)
    if rates.dtype.kind != "f":
        raise TypeError(f"poisson_spikes: rates must be float32 or float64, got {rates.dtype}")
    try:
        shape = np.broadcast_shapes(rates.shape, uniforms.shape)
    except ValueError:
        shape = None
    if shape != uniforms.shape:
        raise ValueError(f"poisson_spikes: rates of shape {rates.shape} must broadcast to the "
                         f"uniforms' shape {uniforms.shape} (e.g. rates (N, C), uniforms (T, N, C))")
    uniforms = uniforms.astype(rates.dtype, copy=False)
    mode = current_spike_mode() if mode is None else mode
    if mode == "spike":
        return PoissonSpike.apply(rates, uniforms, aa)
    if mode == "smooth":
        return smooth_sample(rates, Tensor(uniforms), aa)
    if mode == "straight_through":
        return StraightThroughPoissonSpike.apply(rates, uniforms, aa)
    raise ValueError(f"unknown spike mode {mode!r}; choose one of {SPIKE_MODES}")


def sample_poisson_spikes(rates, timesteps, rng=None, uniforms=None, aa=WINDOW):
    """rates (N, C) -> (spikes (T, N, C), uniforms (T, N, C)): fresh uniforms at each step,
    drawn from ``rng``, unless ``uniforms`` (T, N, C) are given."""
    rates = as_tensor(rates)
    shape = (timesteps, *rates.shape)
    if uniforms is None:
        if rng is None:
            raise ValueError("sample_poisson_spikes needs rng=np.random.Generator (or uniforms=)")
        uniforms = draw_uniforms(rng, shape, rates.dtype)
    uniforms = place_like(uniforms, rates.data)
    if uniforms.shape != shape:
        raise ValueError(f"uniforms must have shape (T, N, C) = {shape}, got {uniforms.shape}")
    return poisson_spikes(rates, uniforms, aa), uniforms


class RatePrior(Module):
    """ESVAE's prior over latent firing rates: r_p = sigmoid(W eps + b), eps ~ N(0, I).

    ``sample_layer`` is a C -> C linear layer (trained at 10x the learning rate in the papers).
    Noise (N, C) comes from ``rng`` or is passed in (``noise=``).
    """

    def __init__(self, channels, *, rng, dtype=np.float32):
        super().__init__()
        self.channels = channels
        self.sample_layer = Linear(channels, channels, rng=rng, dtype=dtype)

    def draw_noise(self, n, rng: np.random.Generator):
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"the prior needs rng=np.random.Generator for its Gaussian noise, got "
                            f"{type(rng).__name__}")
        return rng.standard_normal((n, self.channels)).astype(self.sample_layer.weight.dtype)

    def forward(self, n=None, rng=None, noise=None):
        """-> rates r_p (n, C) in (0, 1), from ``noise`` (n, C) or n fresh draws from ``rng``."""
        if noise is None:
            if n is None or rng is None:
                raise ValueError("RatePrior needs n and rng=np.random.Generator (or noise=)")
            noise = self.draw_noise(n, rng)
        noise = as_tensor(noise, dtype=self.sample_layer.weight.dtype)
        if noise.ndim != 2 or noise.shape[1] != self.channels:
            raise ValueError(f"prior noise must have shape (N, {self.channels}), got {noise.shape}")
        return F.sigmoid(self.sample_layer(noise))
