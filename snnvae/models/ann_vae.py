"""The ANN VAE baseline of the FSVAE and ESVAE papers (their "ANN" rows): FSVAE's skeleton with
real-valued units, BatchNorm2d and LeakyReLU instead of tdBN and LIF, and a Gaussian latent.

    image (N, C_in, S, S) in [-1, 1]
      -> encoder: convs 3x3 / stride 2 / padding 1, each -> BatchNorm2d -> LeakyReLU(0.01)
         (channels 32, 64, 128, 256)                                 (N, 256, 2, 2)
      -> flatten; fc_mu, fc_var: linear 1024 -> D each                mu, logvar (N, D)
      -> z = mu + exp(logvar / 2) * eps, eps ~ N(0, I)                 (N, D)
      -> decoder_input: linear D -> 1024 (no norm, no activation), reshape (N, 256, 2, 2)
      -> decoder: transposed convs 3x3 / stride 2 / padding 1 / output_padding 1, each
         -> BatchNorm2d -> LeakyReLU (256 -> 128 -> 64 -> 32)          (N, 32, S/2, S/2)
      -> final_layer: transposed conv 32 -> 32 (stride 2, to S x S) -> BatchNorm2d -> LeakyReLU
         -> transposed conv 32 -> C_in (3x3, stride 1, padding 1) -> tanh    (N, C_in, S, S)

Loss = MSE(reconstruction, image) + kl_weight * KL, with KL = mean over the batch of
sum over the D latents of (mu^2 + exp(logvar) - 1 - logvar) / 2. The papers' code sets
kl_weight = 1 / (number of training batches per epoch) = 1 / ceil(n_train / batch_size), i.e.
1/240 for MNIST at batch 250. That number depends on the data and the batch size, which the model
does not see: whoever builds the config sets ``kl_weight`` (``kl_weight_for(n_train, batch)``);
``training_losses`` and ``loss`` also take it as an argument, which wins over the config. (The
official test loss weighs its KL by 1 / test batches; ours reports the KL on its own as "kld"
and weighs it in "loss" with the training weight.)

Like the official model, the eval-mode forward also samples z (reconstructions are stochastic);
``reconstruct_with_mean=True`` decodes mu instead. Generation decodes z ~ N(0, I).

Module names mirror the official VanillaVAE (encoder.0.0 conv, encoder.0.1 norm, fc_mu, fc_var,
decoder_input, decoder.0.0, final_layer.0, final_layer.1, final_layer.3), so a PyTorch state dict
maps one to one. CelebA (64 x 64, 3 channels) uses a fifth stage of 512 channels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import functional as F
from ..autograd import Tensor, as_tensor, no_grad
from ..device import to_host
from ..nn import (BatchNorm2d, ConvTranspose2d, LeakyReLU, Linear, Module, Reshape, Sequential,
                  Tanh, conv_bn_lrelu, conv_transpose_bn_lrelu)
from .config import ModelConfig


def kl_weight_for(n_train: int, batch_size: int) -> float:
    """The papers' KL weight: 1 / (training batches per epoch) = 1 / ceil(n_train / batch_size)
    (the last, partial batch counts, as in snnvae.train.Trainer)."""
    if n_train < 1 or batch_size < 1:
        raise ValueError(f"kl_weight_for needs a positive number of training images and batch "
                         f"size, got {n_train} and {batch_size}")
    return 1.0 / math.ceil(n_train / batch_size)


@dataclass(frozen=True)
class ANNVAEConfig(ModelConfig):
    in_channels: int = 1
    input_size: int = 32
    hidden_channels: tuple = (32, 64, 128, 256)
    latent_dim: int = 128
    negative_slope: float = 0.01          # LeakyReLU slope (PyTorch's default, as the papers)
    # weight of the KL term; the papers use 1 / (training batches per epoch), see kl_weight_for.
    # None: it must be given to loss() / training_losses() instead.
    kl_weight: float | None = None
    reconstruct_with_mean: bool = False   # False: eval reconstructions sample z (official)

    def __post_init__(self):
        if not self.hidden_channels or min(self.hidden_channels) < 1:
            raise ValueError(f"hidden_channels must be a non-empty list of positive widths, got "
                             f"{self.hidden_channels}")
        self.check_sizes("latent_dim", "in_channels")
        if self.kl_weight is not None and not self.kl_weight >= 0:
            raise ValueError(f"kl_weight must be >= 0 (or None), got {self.kl_weight}")


# The papers' settings: batch 250, so kl_weight = 1 / ceil(n_train / 250) with the official
# training splits (MNIST and Fashion-MNIST 60000, CIFAR-10 50000, CelebA 162770 images).
PAPER_BATCH_SIZE = 250
ANN_PRESETS = {
    "mnist": ANNVAEConfig(kl_weight=kl_weight_for(60000, PAPER_BATCH_SIZE)),
    "fashion": ANNVAEConfig(kl_weight=kl_weight_for(60000, PAPER_BATCH_SIZE)),
    "cifar10": ANNVAEConfig(in_channels=3, kl_weight=kl_weight_for(50000, PAPER_BATCH_SIZE)),
    "celeba": ANNVAEConfig(in_channels=3, input_size=64, hidden_channels=(32, 64, 128, 256, 512),
                           kl_weight=kl_weight_for(162770, PAPER_BATCH_SIZE)),
}
# Training settings of the papers' ANN rows (snnvae.train.TrainSettings fields): AdamW lr 1e-3,
# betas (0.9, 0.999), weight decay 0.01 (PyTorch's AdamW default), 150 epochs, no schedule.
ANN_PAPER_TRAINING = dict(epochs=150, batch_size=PAPER_BATCH_SIZE, lr=1e-3, weight_decay=0.01,
                          lr_schedule="constant")
# Quick preset for the examples: the paper's widths and latent on the embedded MNIST subset (8000
# training digits), given about the training time of the spiking quick presets (6-7 minutes on
# an idle 2-core CPU; an epoch takes about 15 s, so 24 epochs). Build the model with
# kl_weight = kl_weight_for(len(train_images), training["batch_size"]) (1/125 here: the papers'
# rule, twice their MNIST weight 1/240 because the subset is smaller).
# Measured with 12 epochs: 3.0 minutes of training, test MSE 0.1199 (500 test digits).
ANN_QUICK = dict(model=dict(hidden_channels=(32, 64, 128, 256), latent_dim=128),
                 training=dict(epochs=24, batch_size=64, lr=2e-3, weight_decay=0.01,
                               lr_schedule="cosine", eval_images=500, checkpoint_every=100))


def ann_preset(name: str) -> ANNVAEConfig:
    try:
        return ANN_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown ANN VAE preset {name!r}; choose one of {sorted(ANN_PRESETS)}") \
            from None


@dataclass
class ANNVAEOutput:
    reconstruction: Tensor   # (N, C_in, S, S) in [-1, 1]
    mu: Tensor               # (N, D)
    logvar: Tensor           # (N, D)
    z: Tensor                # (N, D) the decoded latent


@dataclass
class ANNVAELosses:
    loss: Tensor
    reconstruction: Tensor
    kld: Tensor


class ANNVAE(Module):
    def __init__(self, config: ANNVAEConfig, *, rng: np.random.Generator, dtype=np.float32):
        super().__init__()
        self.config = config
        act = dict(rng=rng, dtype=dtype, negative_slope=config.negative_slope)
        hidden = list(config.hidden_channels)
        s = config.bottleneck_size
        flat = hidden[-1] * s * s

        channels = [config.in_channels] + hidden
        self.encoder = Sequential(*[conv_bn_lrelu(a, b, **act)
                                    for a, b in zip(channels[:-1], channels[1:])])
        self.flatten = Reshape(1, (flat,))
        self.fc_mu = Linear(flat, config.latent_dim, rng=rng, dtype=dtype)
        self.fc_var = Linear(flat, config.latent_dim, rng=rng, dtype=dtype)
        self.decoder_input = Linear(config.latent_dim, flat, rng=rng, dtype=dtype)
        self.unflatten = Reshape(1, (hidden[-1], s, s))
        rev = hidden[::-1]
        self.decoder = Sequential(*[conv_transpose_bn_lrelu(a, b, **act)
                                    for a, b in zip(rev[:-1], rev[1:])])
        self.final_layer = Sequential(
            ConvTranspose2d(hidden[0], hidden[0], 3, stride=2, padding=1, output_padding=1,
                            rng=rng, dtype=dtype),
            BatchNorm2d(hidden[0], dtype=dtype),
            LeakyReLU(config.negative_slope),
            ConvTranspose2d(hidden[0], config.in_channels, 3, stride=1, padding=1, rng=rng,
                            dtype=dtype),
            Tanh())

    # --- pieces ------------------------------------------------------------------------------
    def _images(self, images):
        images = self.input_tensor(images, dtype=self.decoder_input.weight.dtype)
        expected = (self.config.in_channels, self.config.input_size, self.config.input_size)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(f"ANNVAE expects images of shape (N, {expected[0]}, {expected[1]}, "
                             f"{expected[2]}), got {images.shape}")
        return images

    def encode(self, images):
        """images (N, C_in, S, S) -> (mu, logvar), each (N, latent_dim)."""
        h = self.flatten(self.encoder(self._images(images)))
        return self.fc_mu(h), self.fc_var(h)

    def decode(self, z):
        """z (N, latent_dim) -> images (N, C_in, S, S) in [-1, 1]."""
        h = self.unflatten(self.decoder_input(as_tensor(z)))
        return self.final_layer(self.decoder(h))

    # --- the model ---------------------------------------------------------------------------
    def forward(self, images, *, rng=None, eps=None):
        """Reconstruct ``images`` through a sampled z; the noise comes from ``rng`` or is ``eps``
        (N, latent_dim). With config.reconstruct_with_mean in eval mode, z = mu (no noise)."""
        mu, logvar = self.encode(images)
        if self.config.reconstruct_with_mean and not self.training:
            z = mu
        else:
            if rng is None and eps is None:
                raise ValueError("ANNVAE.forward needs rng=np.random.Generator (or eps=array) "
                                 "for the reparameterised sample of z")
            z = F.reparameterize(mu, logvar, rng, eps=eps)
        return ANNVAEOutput(self.decode(z), mu, logvar, z)

    def _kl_weight(self, kl_weight):
        weight = self.config.kl_weight if kl_weight is None else kl_weight
        if weight is None:
            raise ValueError("ANNVAE needs the KL weight 1 / (training batches per epoch): build "
                             "the config with kl_weight=kl_weight_for(len(train_images), "
                             "batch_size), or pass kl_weight= to loss()/training_losses()")
        return weight

    def loss(self, images, out: ANNVAEOutput, kl_weight=None) -> ANNVAELosses:
        images = self.input_tensor(images, dtype=out.reconstruction.dtype)
        recon = F.mse_loss(out.reconstruction, images)
        kld = F.gaussian_kl_loss(out.mu, out.logvar)
        return ANNVAELosses(recon + kld * self._kl_weight(kl_weight), recon, kld)

    def sample(self, n, rng: np.random.Generator):
        """Generate n images (n, C_in, S, S): decode z ~ N(0, I) (eval mode)."""
        if self.training:
            raise RuntimeError("sampling uses running BatchNorm2d statistics: call model.eval() "
                               "first")
        dtype = self.decoder_input.weight.dtype
        z = rng.standard_normal((n, self.config.latent_dim), dtype=dtype)
        with no_grad():
            return to_host(self.decode(Tensor(z)).data)

    # --- the training-loop protocol (see snnvae.train) ---------------------------------------
    def training_losses(self, images, rng, epoch, epochs, kl_weight=None):
        """epoch and epochs are unused (no schedule); they complete the Trainer's protocol."""
        images = self.place(images)        # on the GPU: copied over once, for input and loss
        losses = self.loss(images, self(images, rng=rng), kl_weight)
        return {"loss": losses.loss, "recon": losses.reconstruction, "kld": losses.kld}

    def evaluation_losses(self, images, rng, kl_weight=None):
        losses = self.loss(images, self(images, rng=rng), kl_weight)
        return {"loss": losses.loss.item(), "recon": losses.reconstruction.item(),
                "kld": losses.kld.item()}

    def reconstruct(self, images, rng):
        with no_grad():
            return to_host(self(images, rng=rng).reconstruction.data)
