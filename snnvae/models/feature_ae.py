"""The feature encoder of the autoencoder Frechet distance (AE-FD), as the FSVAE and ESVAE papers
use it: the encoder half of a pretrained ANN autoencoder (official weights
``fsvae_ae_mnist_64.pth`` / ``fsvae_ae_fashion_64.pth``).

    image (N, 1, 32, 32) in [-1, 1]
      -> 4 stages: conv 3x3 stride 2 padding 1 -> BatchNorm2d -> LeakyReLU(0.01),
         channels 32, 64, 128, 256                                     (N, 256, 2, 2)
      -> flatten (channel-major, as torch.flatten)                      (N, 1024)
      -> latent_layer: linear 1024 -> 64                                (N, 64)

BatchNorm modes (``bn_mode``):
  "trainbn" (default): every BatchNorm2d normalises with the statistics of the current batch
      (mean and biased variance over N, H, W). The official metric code never switches the
      autoencoder to eval mode, so this is how the papers' numbers were made; the features of an
      image then depend on the other images of its batch, so batches are part of the definition:
      consecutive chunks of ``batch_size`` = 256 in the order given (the test set in file order).
  "eval": running statistics, the cleaner option (features independent of batching).

Names (official state dict -> this module): identical for the encoder,
``encoder.<i>.0.{weight,bias}`` (conv, PyTorch layout (C_out, C_in, 3, 3)),
``encoder.<i>.1.{weight,bias,running_mean,running_var,num_batches_tracked}`` (BatchNorm2d) and
``latent_layer.{weight,bias}`` (64, 1024); the decoder half of the official autoencoder
(``decoder_input``, ``decoder.*``, ``final_layer.*``) is not needed and dropped.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..autograd import no_grad
from ..nn import BatchNorm, Conv2d, LeakyReLU, Linear, Module, Reshape, Sequential

BN_MODES = ("trainbn", "eval")
OFFICIAL_BATCH = 256
ENCODER_PREFIXES = ("encoder.", "latent_layer.")


class FeatureEncoder(Module):
    def __init__(self, in_channels=1, latent_dim=64, hidden_channels=(32, 64, 128, 256),
                 input_size=32, *, rng: np.random.Generator, dtype=np.float64):
        super().__init__()
        channels = [in_channels, *hidden_channels]
        self.encoder = Sequential(*[
            Sequential(Conv2d(a, b, 3, stride=2, padding=1, rng=rng, dtype=dtype),
                       BatchNorm(b, channel_axis=1, dtype=dtype),
                       LeakyReLU(0.01))
            for a, b in zip(channels[:-1], channels[1:])])
        s = input_size // 2 ** len(hidden_channels)
        self.flatten = Reshape(1, (hidden_channels[-1] * s * s,))
        self.latent_layer = Linear(hidden_channels[-1] * s * s, latent_dim, rng=rng, dtype=dtype)
        self.in_channels, self.input_size = in_channels, input_size

    def forward(self, x):
        return self.latent_layer(self.flatten(self.encoder(x)))

    @property
    def dtype(self):
        return self.latent_layer.weight.dtype

    def encode(self, images, bn_mode="trainbn", batch_size=OFFICIAL_BATCH, progress=None):
        """images (N, C, S, S) in [-1, 1] -> features (N, latent_dim), computed in this model's
        dtype. In "trainbn" mode each consecutive chunk of ``batch_size`` images is normalised
        with its own statistics; the running statistics are left unchanged either way.
        ``progress``: an optional callable(n_done) called after each chunk."""
        if bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
        images = np.asarray(images)
        expected = (self.in_channels, self.input_size, self.input_size)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(f"the feature encoder expects images of shape (N, {expected[0]}, "
                             f"{expected[1]}, {expected[2]}), got {images.shape}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        saved = {n: np.array(b, copy=True) for n, b in self.named_buffers()}
        was_training = self.training
        self.train(bn_mode == "trainbn")
        out = []
        try:
            with no_grad():
                for start in range(0, len(images), batch_size):
                    chunk = images[start:start + batch_size].astype(self.dtype, copy=False)
                    out.append(self(chunk).data)
                    if progress is not None:
                        progress(len(chunk))
        finally:
            self.train(was_training)
            self.load_state_dict(saved, strict=False)
        latent = self.latent_layer.out_features
        return np.concatenate(out) if out else np.empty((0, latent), self.dtype)

    @classmethod
    def from_official(cls, path, dtype=np.float64):
        """The official feature autoencoder's encoder from its ``.pth`` state dict (float32
        values; held in ``dtype``, float64 by default as the reference statistics need)."""
        from ..io import read_state_dict
        state = convert_official_feature_ae_state(read_state_dict(path), source=path)
        conv0 = state["encoder.0.0.weight"]
        hidden = tuple(state[f"encoder.{i}.0.weight"].shape[0]
                       for i in range(len({k.split(".")[1] for k in state
                                           if k.startswith("encoder.")})))
        latent, flat = state["latent_layer.weight"].shape
        size = int(round(np.sqrt(flat / hidden[-1]))) * 2 ** len(hidden)
        model = cls(conv0.shape[1], latent, hidden, size, rng=np.random.default_rng(0),
                    dtype=dtype)   # the drawn initial weights are all replaced just below
        model.load_state_dict(state)
        model.eval()
        return model


def convert_official_feature_ae_state(state: dict, source="state dict") -> dict:
    """Official ``ann_ae.AE`` state dict -> FeatureEncoder's: the encoder and latent_layer
    entries unchanged, the decoder half dropped. Raises if the encoder entries are missing."""
    out = {k: np.asarray(v) for k, v in state.items() if k.startswith(ENCODER_PREFIXES)}
    if "latent_layer.weight" not in out or "encoder.0.0.weight" not in out:
        raise ValueError(f"{source} is not the official feature autoencoder: it lacks "
                         f"encoder.0.0.weight / latent_layer.weight (it has "
                         f"{sorted(state)[:6]}...)")
    return out


def weights_sha256(path) -> str:
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
