"""The spiking encoder and decoder that FSVAE and ESVAE share (only their latents differ).

    image (N, C_in, S, S) in [-1, 1]
      -> repeated over T steps (direct input)                       (T, N, C_in, S, S)
      -> encoder: spiking convs 3x3 / stride 2 (conv, tdBN, LIF)     (T, N, hidden[-1], s, s)
      -> flatten, before_latent_layer: linear -> tdBN -> LIF       (T, N, latent_dim)
         ... the model's latent ...                                  z (T, N, latent_dim)
      -> decoder_input: linear -> tdBN -> LIF, reshape               (T, N, hidden[-1], s, s)
      -> decoder: spiking transposed convs 3x3 / stride 2           (T, N, hidden[0], S/2, S/2)
      -> final_layer: transposed conv to S x S (tdBN, LIF), then transposed conv to C_in
         channels (stride 1, no tdBN, no LIF)                        (T, N, C_in, S, S)
      -> membrane output sum_t 0.8^(T-1-t) x_t, tanh                 (N, C_in, S, S)

s = S / 2^len(hidden) (2 for 32 x 32 inputs and four stages). Module names follow the official
code (encoder.0, before_latent_layer, decoder_input, decoder.0, final_layer.0, final_layer.1,
membrane_output_layer). A model calls ``build_encoder`` and ``build_decoder`` in its
constructor and builds its latent in between: that order is the order in which weights are
drawn from ``rng`` and in which parameters are listed (optimiser state follows it).

The config needs: in_channels, input_size, hidden_channels, latent_dim, timesteps,
bottleneck_size, window_center, detach_reset.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..autograd import Tensor, as_tensor, no_grad
from ..device import to_host
from ..nn import (ConvTranspose2d, MembraneOutput, Module, Reshape, Sequential, SpikingConv2d,
                  SpikingConvTranspose2d, SpikingLinear)


def spiking_options(config, rng, dtype):
    """Keyword arguments every spiking block of a model takes."""
    lif = dict(window_center=config.window_center, detach_reset=config.detach_reset)
    return dict(rng=rng, dtype=dtype, lif_options=lif)


class SpikingVAESkeleton(Module):
    """Base class of the spiking VAEs: encoder, before-latent layer, decoder, read-out."""

    def build_encoder(self, config, rng, dtype):
        common = spiking_options(config, rng, dtype)
        hidden = list(config.hidden_channels)
        flat = hidden[-1] * config.bottleneck_size ** 2
        channels = [config.in_channels] + hidden
        self.encoder = Sequential(*[SpikingConv2d(a, b, 3, stride=2, padding=1, **common)
                                    for a, b in zip(channels[:-1], channels[1:])])
        self.flatten = Reshape(2, (flat,))
        self.before_latent_layer = SpikingLinear(flat, config.latent_dim, **common)

    def build_decoder(self, config, rng, dtype):
        common = spiking_options(config, rng, dtype)
        hidden = list(config.hidden_channels)
        s = config.bottleneck_size
        self.decoder_input = SpikingLinear(config.latent_dim, hidden[-1] * s * s, **common)
        self.unflatten = Reshape(2, (hidden[-1], s, s))
        rev = hidden[::-1]
        self.decoder = Sequential(*[
            SpikingConvTranspose2d(a, b, 3, stride=2, padding=1, output_padding=1, **common)
            for a, b in zip(rev[:-1], rev[1:])])
        self.final_layer = Sequential(
            SpikingConvTranspose2d(hidden[0], hidden[0], 3, stride=2, padding=1, output_padding=1,
                                   **common),
            ConvTranspose2d(hidden[0], config.in_channels, 3, stride=1, padding=1, rng=rng,
                            dtype=dtype))
        self.membrane_output_layer = MembraneOutput(decay=0.8)

    @property
    def dtype(self):
        return self.decoder_input.weight.dtype

    def repeat_over_time(self, images):
        """Direct input coding: (N, C, S, S) -> (T, N, C, S, S), the image at every step.
        Image arrays are cast to the model's dtype. The result is a read-only view with a
        stride-0 time axis (no copy), which tells the first convolution to run once per image
        instead of once per step (``functional.conv``; the same values up to rounding). On the
        GPU the repeat is a copy T times the size, and the first convolution runs T times."""
        images = self.input_tensor(images, dtype=self.dtype)
        expected = (self.config.in_channels, self.config.input_size, self.config.input_size)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(f"{type(self).__name__} expects images of shape (N, {expected[0]}, "
                             f"{expected[1]}, {expected[2]}), got {images.shape}")
        T = self.config.timesteps
        return Tensor(np.broadcast_to(images.data, (T, *images.shape)))

    def encode(self, images):
        """images (N, C_in, S, S) -> spikes before the latent (T, N, latent_dim)."""
        h = self.encoder(self.repeat_over_time(images))
        return self.before_latent_layer(self.flatten(h))

    def decode(self, z):
        """z (T, N, latent_dim) spikes -> images (N, C_in, S, S) in [-1, 1]."""
        h = self.decoder(self.unflatten(self.decoder_input(as_tensor(z))))
        read_out = self._read_out_by_linearity(h)
        if read_out is None:
            read_out = self.membrane_output_layer(self.final_layer(h))
        return F.tanh(read_out)

    def _read_out_by_linearity(self, h):
        """final_layer, then the membrane output, on h (T, N, C, S/2, S/2), with the read-out
        layer run on N images instead of T*N. The membrane output is a weighted sum over time
        and the read-out layer R (a transposed convolution with bias b) is linear, so

            sum_t d^(T-1-t) (R s_t + b) = R(sum_t d^(T-1-t) s_t) + b sum_t d^(T-1-t)

        exactly, up to the order of the additions. The block sums its spikes as it makes them
        (``summed_over_time``: in eval mode one operation, in training mode the transposed
        convolution and a fused tdBN -> LIF -> sum whose backward hands d^(T-1-t) g to step t)
        and never stores them; while firing rates are monitored or the block is instrumented
        its spikes are made and then summed by ``F.membrane_output``. R then runs on N images
        instead of T*N, forward and backward.
        None (run the modules one by one) when the read-out is not exactly block -> plain
        transposed convolution -> membrane output, or while one of them is instrumented (the
        operation counts and timers wrap a module's forward)."""
        if not self._read_out_is_block_conv_membrane():
            return None
        block, layer = self.final_layer[0], self.final_layer[1]
        if any("forward" in vars(m) for m in (self.final_layer, layer,
                                               self.membrane_output_layer)):
            return None
        decay = self.membrane_output_layer.decay
        if block.sums_over_time(h) and "forward" not in vars(block):
            summed = block.summed_over_time(h, decay)
        else:
            summed = F.membrane_output(block(h), decay)
        bias = layer.bias
        if bias is not None:
            bias = F.mul(bias, float(sum(decay ** k for k in range(h.shape[0]))))
        return F.conv_transpose2d(summed, layer.weight, bias, layer.stride, layer.padding,
                                  layer.output_padding)

    def _read_out_is_block_conv_membrane(self):
        """Whether final_layer and the read-out are exactly what the identity above needs: a
        spiking transposed-conv block, then a plain (linear) transposed convolution, then the
        membrane output; a subclass that changes any of them runs its modules one by one."""
        layers = list(self.final_layer)
        return (len(layers) == 2 and isinstance(layers[0], SpikingConvTranspose2d)
                and type(layers[1]) is ConvTranspose2d
                and type(self.membrane_output_layer) is MembraneOutput)

    # --- the training-loop protocol shared by FSVAE and ESVAE (see snnvae.train) ------------
    # A subclass's forward(images, rng=...) returns an output with .reconstruction, and its
    # loss(images, output) the losses .loss, .reconstruction and .distance.
    def evaluation_losses(self, images, rng):
        losses = self.loss(images, self(images, rng=rng))
        return {"loss": losses.loss.item(), "recon": losses.reconstruction.item(),
                "distance": losses.distance.item()}

    def reconstruct(self, images, rng):
        with no_grad():
            return to_host(self(images, rng=rng).reconstruction.data)
