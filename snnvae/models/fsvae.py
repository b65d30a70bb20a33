"""FSVAE: the Fully Spiking Variational Autoencoder (Kamata et al., AAAI 2022).

    image (N, C_in, S, S) in [-1, 1]
      -> repeated over T steps (direct input)                       (T, N, C_in, S, S)
      -> encoder: spiking convs 3x3 / stride 2 (conv, tdBN, LIF)     (T, N, 256, 2, 2)
      -> flatten, before_latent_layer: linear -> tdBN -> LIF       (T, N, C)
      -> posterior q(z_t | x_<=t, z_<t), one-of-k pick             q_z (T, N, C, k), z (T, N, C)
      -> prior p(z_t | z_<t) on (0, z_0 .. z_{T-2})                p_z (T, N, C, k)
      -> decoder_input: linear -> tdBN -> LIF, reshape               (T, N, 256, 2, 2)
      -> decoder: spiking transposed convs 3x3 / stride 2           (T, N, 32, S/2, S/2)
      -> final_layer: transposed conv to S x S (tdBN, LIF), then transposed conv to C_in
         channels (stride 1, no tdBN, no LIF)                        (T, N, C_in, S, S)
      -> membrane output sum_t 0.8^(T-1-t) x_t, tanh                 (N, C_in, S, S)

Loss = MSE(reconstruction, image) + weight * distance(q_z, p_z), the distance being the
PSP-based "MMD" (weight 1) or the Bernoulli KL (weight 1e-4).

The encoder and decoder are shared with ESVAE (``skeleton.SpikingVAESkeleton``).
Module names mirror the official code (encoder.0, before_latent_layer, posterior.layers.0,
prior.layers.0, decoder_input, decoder.0, final_layer.0, final_layer.1), so a state dict maps one
to one apart from the weight layouts (see ``official.convert_official_fsvae_state``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import functional as F
from ..autograd import Tensor, no_grad
from ..device import to_host
from ..latent import BernoulliPosterior, BernoulliPrior, RandomPicks
from .config import FSVAEConfig
from .skeleton import SpikingVAESkeleton, spiking_options


@dataclass
class FSVAEOutput:
    """Everything one forward pass produces (Tensors, time first)."""
    reconstruction: Tensor   # (N, C_in, S, S) in [-1, 1]
    q_z: Tensor              # (T, N, C, k) posterior spikes
    p_z: Tensor              # (T, N, C, k) prior spikes
    z: Tensor                # (T, N, C) sampled latent


@dataclass
class FSVAELosses:
    loss: Tensor
    reconstruction: Tensor
    distance: Tensor


class FSVAE(SpikingVAESkeleton):
    def __init__(self, config: FSVAEConfig, *, rng: np.random.Generator, dtype=np.float32):
        super().__init__()
        self.config = config
        common = spiking_options(config, rng, dtype)
        self.build_encoder(config, rng, dtype)
        self.prior = BernoulliPrior(config.latent_dim, config.k,
                                    prefix_updates_bn=config.prefix_updates_bn, **common)
        self.posterior = BernoulliPosterior(config.latent_dim, config.k,
                                            prefix_updates_bn=config.prefix_updates_bn, **common)
        self.build_decoder(config, rng, dtype)

    # --- the model ---------------------------------------------------------------------------
    def forward(self, images, *, picker=None, rng=None, scheduled_p=0.0):
        """Reconstruct ``images``. Randomness: the one-of-k picks come from ``picker`` or, if
        None, from ``rng``; scheduled sampling (training, scheduled_p > 0) also draws from rng.
        """
        if picker is None:
            if rng is None:
                raise ValueError("FSVAE.forward needs rng=np.random.Generator (or a picker) for "
                                 "the posterior's one-of-k picks")
            picker = RandomPicks(self.config.k, rng)
        x = self.encode(images)
        q_z, z = self.posterior(x, picker)
        use_scheduled = self.config.scheduled_sampling and self.training and scheduled_p > 0
        p_z = self.prior(z, scheduled_p if use_scheduled else 0.0, rng)
        return FSVAEOutput(self.decode(z), q_z, p_z, z)

    def loss(self, images, out: FSVAEOutput) -> FSVAELosses:
        images = self.input_tensor(images, dtype=out.reconstruction.dtype)
        recon = F.mse_loss(out.reconstruction, images)
        if self.config.distance == "mmd":
            distance = F.psp_mmd_loss(out.q_z, out.p_z)
        else:
            distance = F.bernoulli_kld_loss(out.q_z, out.p_z)
        return FSVAELosses(recon + distance * self.config.weight_of_distance, recon, distance)

    def sample(self, n, rng: np.random.Generator, incremental=True):
        """Generate n images (n, C_in, S, S) from the prior (eval mode)."""
        if self.training:
            raise RuntimeError("sampling uses running tdBN statistics: call model.eval() first")
        picker = RandomPicks(self.config.k, rng)
        dtype = self.decoder_input.weight.dtype
        if incremental:
            z = self.prior.sample(n, self.config.timesteps, picker, dtype)
        else:
            z = self.prior.sample_by_prefix(n, self.config.timesteps, picker, dtype)
        with no_grad():
            return to_host(self.decode(Tensor(z)).data)

    def reconstruct(self, images, rng):
        """Reconstructions (N, C_in, S, S) of ``images``: encoder, posterior, decoder. The
        prior, which only the loss needs, is skipped (in eval mode it draws no random numbers,
        so the result and the rng's stream are those of ``forward``)."""
        picker = RandomPicks(self.config.k, rng)
        with no_grad():
            _, z = self.posterior(self.encode(images), picker)
            return to_host(self.decode(z).data)

    # --- the training-loop protocol (see snnvae.train; evaluation in the skeleton) -----------
    def training_losses(self, images, rng, epoch, epochs):
        p = self.scheduled_probability(epoch, epochs) if self.config.scheduled_sampling else 0.0
        images = self.place(images)        # on the GPU: copied over once, for input and loss
        losses = self.loss(images, self(images, rng=rng, scheduled_p=p))
        return {"loss": losses.loss, "recon": losses.reconstruction, "distance": losses.distance}

    @staticmethod
    def scheduled_probability(epoch, epochs):
        """The official schedule: p = 0.1 + 0.2 * epoch / epochs (rising from 0.1 towards 0.3)."""
        return 0.1 + 0.2 * epoch / max(epochs, 1)
