"""Official PyTorch checkpoints -> this project's models.

This module sits above ``snnvae.models`` (it builds models); ``snnvae.io.pth`` below it only
reads files.

Feature autoencoder of the AE-FD (``ann_models/ann_ae.AE(1, 64)``, files
``fsvae_ae_mnist_64.pth`` / ``fsvae_ae_fashion_64.pth``) -> ``models.feature_ae.FeatureEncoder``:

    official                                   ours                      layout
    encoder.<i>.0.weight / .bias               same                      (C_out, C_in, 3, 3)
    encoder.<i>.1.weight / .bias /             same (BatchNorm,          (C,), count ()
        .running_mean / .running_var /             channel axis 1)
        .num_batches_tracked
    latent_layer.weight / .bias                same                      (64, 1024)
    decoder_input.*, decoder.*, final_layer.*  dropped (AE-FD needs only the encoder)

FSVAE (``fsvae_models/fsvae.FSVAE``) -> ``models.fsvae.FSVAE``: our module tree mirrors the
official one, so names are identical (``encoder.<i>``, ``before_latent_layer``,
``posterior.layers.<i>``, ``prior.layers.<i>``, ``decoder_input``, ``decoder.<i>``,
``final_layer.0``, ``final_layer.1``, each with ``.weight``, ``.bias`` and a tdBN under ``.bn``).
What changes (``models.official.convert_official_fsvae_state``):

* tdConv / tdConvTranspose weights are Conv3d / ConvTranspose3d kernels with a time extent of
  1, (C_out, C_in, k, k, 1) / (C_in, C_out, k, k, 1): the trailing time axis is dropped, giving
  the 2-D layouts our time-distributed layers share over the time steps (time is our FIRST
  axis for activations; weights carry no time axis);
* ``membrane_output_layer.coef`` (0.8^(T-1-t), shape (T,) with time last) is checked against
  the configuration's T and dropped (we compute it); ``prior.initial_input`` and
  ``posterior.initial_input`` (the zero z_{-1}) are checked to be zero and dropped;
* a ``module.`` prefix (nn.DataParallel) is stripped, and a checkpoint dict holding the state
  dict under ``state_dict`` / ``model`` is unwrapped (``read_state_dict``).

ESVAE -> ``models.esvae.ESVAE``: the official ESVAE builds on FSVAE's encoder and decoder, so
those names and the Conv3d conversion are FSVAE's; the latent adds the prior's sample layer
(ours: ``prior.sample_layer.weight`` / ``.bias``). No official ESVAE checkpoint was at hand to
confirm the latent's names: any name that does not fit raises a KeyError listing the missing and
unexpected entries, so a checkpoint with other names can be renamed before loading.

ANN VAE (``ann_models/ann_vae``) -> ``models.ann_vae.ANNVAE``: plain Conv2d / ConvTranspose2d /
BatchNorm2d / Linear modules under the same names (``encoder.<i>.<j>``, ``fc_mu``, ``fc_var``,
``decoder_input``, ``decoder.<i>.<j>``, ``final_layer.<j>``), same layouts: loaded as they are.
"""
from __future__ import annotations

import numpy as np

from .pth import read_state_dict


def official_feature_encoder(path, dtype=np.float64):
    """The AE-FD feature encoder with the official weights at ``path``."""
    from ..models.feature_ae import FeatureEncoder
    return FeatureEncoder.from_official(path, dtype=dtype)


def official_fsvae_state(path, timesteps: int) -> dict:
    """An official FSVAE ``.pth`` state dict -> a state dict for ``models.FSVAE`` (see above)."""
    from ..models.official import convert_official_fsvae_state
    return convert_official_fsvae_state(read_state_dict(path), timesteps)


def load_official_fsvae(path, config, dtype=np.float32):
    """Build ``models.FSVAE(config)`` and load the official weights at ``path`` into it. The
    config must match the one the checkpoint was trained with (the paper presets for the
    published checkpoints); a mismatch raises naming the entries whose shapes differ."""
    from ..models.fsvae import FSVAE
    model = FSVAE(config, rng=np.random.default_rng(0), dtype=dtype)   # weights replaced below
    model.load_state_dict(official_fsvae_state(path, config.timesteps))
    return model


def load_official_esvae(path, config, dtype=np.float32):
    """Build ``models.ESVAE(config)`` and load an official ESVAE ``.pth`` into it (see above)."""
    from ..models.esvae import ESVAE
    from ..models.official import convert_official_fsvae_state
    model = ESVAE(config, rng=np.random.default_rng(0), dtype=dtype)    # weights replaced below
    model.load_state_dict(convert_official_fsvae_state(read_state_dict(path), config.timesteps))
    return model


def load_official_ann_vae(path, config, dtype=np.float32):
    """Build ``models.ANNVAE(config)`` and load an official ANN VAE ``.pth`` into it."""
    from ..models.ann_vae import ANNVAE
    model = ANNVAE(config, rng=np.random.default_rng(0), dtype=dtype)   # weights replaced below
    model.load_state_dict(read_state_dict(path))
    return model
