"""ESVAE: the Efficient Spiking Variational Autoencoder (Zhan et al., 2023).

FSVAE's spiking encoder and decoder (``skeleton.SpikingVAESkeleton``) around a latent of
Poisson spikes sampled from firing rates:

    image (N, C_in, S, S)
      -> encoder, before_latent_layer (as FSVAE)                    x   (T, N, C)
      -> posterior rates r_q = mean_t x_t                           r_q (N, C) in [0, 1]
      -> Poisson spikes z_t = 1[r_q > U_t], fresh U_t ~ U(0, 1)     z   (T, N, C)
      -> decoder, membrane output, tanh (as FSVAE)                      (N, C_in, S, S)
    prior: r_p = sigmoid(sample_layer(eps)), eps ~ N(0, I)          r_p (N, C)

Loss = MSE(reconstruction, image) + lambda * MMD^2(r_q, r_p), lambda = 0.001, the MMD with the
sum of five RBF kernels (data-dependent bandwidth, held constant for the gradient) or with the
linear kernel (``snnvae.functional.mmd``). The prior learns only through the MMD term; the
encoder gets gradient from both terms, through the sampler's surrogate
dz_t/dr = 1[|r - U_t| < 0.5] (``snnvae.latent.poisson``) and through the mean over time.

Generation: draw eps, compute r_p, sample Poisson spikes from it at every step, decode. No loop
over time is needed: unlike FSVAE's autoregressive latent, z_t does not depend on z_<t.

Randomness of a forward pass, in this order from ``rng``: the uniforms (T, N, C), then the
prior's noise (N, C). Both can be passed in instead (``uniforms=``, ``noise=``), which makes the
loss a deterministic function of the parameters (finite differences, replaying official draws).
The posterior samples in eval mode too, so reconstructions are stochastic, as in the official code.

Training: AdamW with two parameter groups, the prior's sample layer at 10x the learning rate
(``parameter_groups``, used by ``snnvae.train.Trainer``); see ``esvae_config`` for the papers'
settings and their learning-rate scaling by batch / 250.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import functional as F
from ..autograd import Tensor, no_grad
from ..device import to_host
from ..latent import RatePrior, sample_poisson_spikes
from .esvae_config import ESVAEConfig
from .skeleton import SpikingVAESkeleton


@dataclass
class ESVAEOutput:
    """Everything one forward pass produces (Tensors, time first)."""
    reconstruction: Tensor   # (N, C_in, S, S) in [-1, 1]
    r_q: Tensor              # (N, C) posterior firing rates
    r_p: Tensor              # (N, C) prior firing rates
    z: Tensor                # (T, N, C) sampled latent spikes


@dataclass
class ESVAELosses:
    loss: Tensor
    reconstruction: Tensor
    distance: Tensor


class ESVAE(SpikingVAESkeleton):
    def __init__(self, config: ESVAEConfig, *, rng: np.random.Generator, dtype=np.float32):
        super().__init__()
        self.config = config
        self.build_encoder(config, rng, dtype)
        self.prior = RatePrior(config.latent_dim, rng=rng, dtype=dtype)
        self.build_decoder(config, rng, dtype)

    # --- pieces ------------------------------------------------------------------------------
    def posterior_rates(self, images):
        """images (N, C_in, S, S) -> r_q (N, C): the before-latent spikes averaged over T."""
        return F.mean(self.encode(images), axis=0)

    def latent_spikes(self, rates, rng=None, uniforms=None):
        """rates (N, C) -> z (T, N, C) Poisson spikes (uniforms from rng unless given)."""
        z, _ = sample_poisson_spikes(rates, self.config.timesteps, rng, uniforms,
                                     aa=self.config.sampler_window)
        return z

    # --- the model ---------------------------------------------------------------------------
    def forward(self, images, *, rng=None, uniforms=None, noise=None):
        """Reconstruct ``images``; also return both rates and the sampled spikes.

        rng draws the uniforms (T, N, C) and then the prior noise (N, C) unless they are given.
        """
        if rng is None and (uniforms is None or noise is None):
            raise ValueError("ESVAE.forward needs rng=np.random.Generator (or both uniforms= and "
                             "noise=) for the Poisson sampler and the prior")
        r_q = self.posterior_rates(images)
        z = self.latent_spikes(r_q, rng, uniforms)
        r_p = self.prior(r_q.shape[0], rng, noise)
        return ESVAEOutput(self.decode(z), r_q, r_p, z)

    def distance(self, r_q, r_p, bandwidth=None):
        """MMD^2 between posterior and prior rates (rbf: ``bandwidth`` fixes b, see F.rbf_mmd)."""
        if self.config.distance == "rbf":
            return F.rbf_mmd(r_q, r_p, bandwidth=bandwidth)
        return F.linear_mmd(r_q, r_p)

    def loss(self, images, out: ESVAEOutput, bandwidth=None) -> ESVAELosses:
        images = self.input_tensor(images, dtype=out.reconstruction.dtype)
        recon = F.mse_loss(out.reconstruction, images)
        distance = self.distance(out.r_q, out.r_p, bandwidth)
        return ESVAELosses(recon + distance * self.config.distance_weight, recon, distance)

    def sample(self, n, rng: np.random.Generator, noise=None):
        """Generate n images (n, C_in, S, S) from the prior (eval mode): r_p from fresh noise,
        then Poisson spikes at every step, decoded."""
        if self.training:
            raise RuntimeError("sampling uses running tdBN statistics: call model.eval() first")
        with no_grad():
            r_p = self.prior(n, rng, noise)
            return to_host(self.decode(self.latent_spikes(r_p, rng)).data)

    # --- the training-loop protocol (see snnvae.train; evaluation in the skeleton) -----------
    def parameter_groups(self):
        """Two optimiser groups: everything else, and the prior's sample layer at
        ``sample_layer_lr_scale`` (10) times the learning rate."""
        fast = {id(p) for p in self.prior.sample_layer.parameters()}
        return [{"params": [p for p in self.parameters() if id(p) not in fast], "lr_scale": 1.0},
                {"params": self.prior.sample_layer.parameters(),
                 "lr_scale": float(self.config.sample_layer_lr_scale)}]

    def training_losses(self, images, rng, epoch, epochs):
        images = self.place(images)        # on the GPU: copied over once, for input and loss
        losses = self.loss(images, self(images, rng=rng))
        return {"loss": losses.loss, "recon": losses.reconstruction, "distance": losses.distance}

