"""Non-spiking building blocks of the ANN VAE baseline: images are (N, C, H, W), no time axis.

BatchNorm2d is the per-channel batch norm of ``snnvae.functional.batch_norm`` with channel axis 1
and no threshold scale, i.e. PyTorch's BatchNorm2d:

    training: mean_c, var_c over the n = N*H*W values of channel c (var biased, divided by n)
              y = gamma_c (x - mean_c) / sqrt(var_c + eps) + beta_c
              running_mean <- (1 - m) running_mean + m mean_c
              running_var  <- (1 - m) running_var  + m var_c n / (n - 1)      (m = 0.1)
    eval:     y = gamma_c (x - running_mean_c) / sqrt(running_var_c + eps) + beta_c

It shares tdBN's kernels: tdBN is the same normalisation over (T*N, C, H*W) scaled by alpha Vth.

The blocks are Sequentials named like the official VanillaVAE's (conv "0", norm "1", activation
"2"), so parameter and buffer names map one to one (2-D weights have PyTorch's layouts already).
"""
from __future__ import annotations

import numpy as np

from .layers import BatchNorm, Conv2d, ConvTranspose2d, LeakyReLU
from .module import Sequential


class BatchNorm2d(BatchNorm):
    """Batch norm of (N, C, H, W) images over N, H and W (see the module docstring)."""

    def __init__(self, num_features, momentum=0.1, eps=1e-5, dtype=np.float32):
        super().__init__(num_features, channel_axis=1, scale=1.0, momentum=momentum, eps=eps,
                         dtype=dtype)

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"BatchNorm2d expects images (N, C, H, W), got shape {x.shape}; "
                             f"for time-first spiking tensors use TdBatchNorm")
        return super().forward(x)

    def extra_repr(self):
        return f"{self.weight.shape[0]}, momentum {self.momentum}, eps {self.eps:g}"


def conv_bn_lrelu(in_channels, out_channels, *, rng, dtype=np.float32, negative_slope=0.01):
    """Encoder stage: conv 3x3 stride 2 padding 1 (halves H and W) -> BatchNorm2d -> LeakyReLU."""
    return Sequential(Conv2d(in_channels, out_channels, 3, stride=2, padding=1, rng=rng,
                             dtype=dtype),
                      BatchNorm2d(out_channels, dtype=dtype),
                      LeakyReLU(negative_slope))


def conv_transpose_bn_lrelu(in_channels, out_channels, *, rng, dtype=np.float32,
                            negative_slope=0.01):
    """Decoder stage: transposed conv 3x3 stride 2 padding 1 output_padding 1 (doubles H and W)
    -> BatchNorm2d -> LeakyReLU."""
    return Sequential(ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1,
                                      output_padding=1, rng=rng, dtype=dtype),
                      BatchNorm2d(out_channels, dtype=dtype),
                      LeakyReLU(negative_slope))
