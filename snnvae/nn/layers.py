"""Layers: thin Modules that hold parameters and call one functional op.

Spiking tensors are time first, (T, N, C, H, W) or (T, N, F). Weighted layers share their
weights over time. Every constructor that draws weights takes an explicit
``rng: numpy.random.Generator``.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from .init import bias_uniform, kaiming_uniform, require_rng
from .module import Module, Parameter


class Linear(Module):
    """y = x W^T + b on the last axis; any leading axes (e.g. T, N) are kept."""

    def __init__(self, in_features, out_features, bias=True, *, rng, dtype=np.float32):
        super().__init__()
        require_rng(rng, "Linear")
        shape = (out_features, in_features)
        self.weight = Parameter(kaiming_uniform(shape, rng, dtype=dtype))
        self.bias = Parameter(bias_uniform(out_features, shape, rng, dtype)) if bias else None
        self.in_features, self.out_features = in_features, out_features

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"{self.in_features} -> {self.out_features}"


class Conv2d(Module):
    """Time-distributed 2-D convolution; weight (C_out, C_in, k, k)."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=0, bias=True,
                 *, rng, dtype=np.float32):
        super().__init__()
        require_rng(rng, "Conv2d")
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.weight = Parameter(kaiming_uniform(shape, rng, dtype=dtype))
        self.bias = Parameter(bias_uniform(out_channels, shape, rng, dtype)) if bias else None
        self.stride, self.padding = stride, padding

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self):
        o, i, k, _ = self.weight.shape
        return f"{i} -> {o}, kernel {k}, stride {self.stride}, padding {self.padding}"


class ConvTranspose2d(Module):
    """Time-distributed 2-D transposed convolution; weight (C_in, C_out, k, k)."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=0,
                 output_padding=0, bias=True, *, rng, dtype=np.float32):
        super().__init__()
        require_rng(rng, "ConvTranspose2d")
        shape = (in_channels, out_channels, kernel_size, kernel_size)
        self.weight = Parameter(kaiming_uniform(shape, rng, dtype=dtype))
        self.bias = Parameter(bias_uniform(out_channels, shape, rng, dtype)) if bias else None
        self.stride, self.padding, self.output_padding = stride, padding, output_padding

    def forward(self, x):
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                  self.output_padding)

    def extra_repr(self):
        i, o, k, _ = self.weight.shape
        return (f"{i} -> {o}, kernel {k}, stride {self.stride}, padding {self.padding}, "
                f"output_padding {self.output_padding}")


class BatchNorm(Module):
    """Per-channel batch norm with running statistics (PyTorch's BatchNorm semantics).

    channel_axis 1 gives BatchNorm2d on (N, C, H, W); ``TdBatchNorm`` uses axis 2 of a
    time-first tensor and scales by alpha * Vth. Parameters: weight (gamma), bias (beta);
    buffers: running_mean, running_var, num_batches_tracked.
    """

    def __init__(self, num_features, *, channel_axis=1, scale=1.0, momentum=0.1, eps=1e-5,
                 dtype=np.float32):
        super().__init__()
        self.weight = Parameter(np.ones(num_features, dtype=dtype))
        self.bias = Parameter(np.zeros(num_features, dtype=dtype))
        self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
        self.register_buffer("running_var", np.ones(num_features, dtype=dtype))
        self.register_buffer("num_batches_tracked", np.zeros((), dtype=np.int64))
        self.channel_axis, self.scale, self.momentum, self.eps = channel_axis, scale, momentum, eps

    def forward(self, x):
        self._count_batch()
        return F.batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var,
                            training=self.training, channel_axis=self.channel_axis,
                            scale=self.scale, momentum=self.momentum, eps=self.eps)

    def extra_repr(self):
        return f"{self.weight.shape[0]}, scale {self.scale:g}"

    def _count_batch(self):
        if self.training:
            self.num_batches_tracked = self.num_batches_tracked + 1


def calibrate_running_statistics(model, forward):
    """Run ``forward()`` (no gradient) with every BatchNorm of ``model`` at momentum 1, so that
    the running statistics become exactly those of that call; then restore each momentum.

    With the initial statistics (mean 0, variance 1) an eval-mode spiking network is often
    silent (tdBN scales by alpha * Vth); one calibrating call makes eval mode meaningful.
    """
    from ..autograd import no_grad
    norms = [m for _, m in model.named_modules() if isinstance(m, BatchNorm)]
    saved = [bn.momentum for bn in norms]
    for bn in norms:
        bn.momentum = 1.0
    try:
        with no_grad():
            forward()
    finally:
        for bn, momentum in zip(norms, saved):
            bn.momentum = momentum


class TdBatchNorm(BatchNorm):
    """tdBN for time-first spiking tensors: statistics over T, N and space; output scaled by
    alpha * Vth (alpha 1 in encoder/decoder, 2 in FSVAE's latent networks)."""

    def __init__(self, num_features, alpha=1.0, vth=0.2, momentum=0.1, eps=1e-5, dtype=np.float32):
        super().__init__(num_features, channel_axis=2, scale=alpha * vth, momentum=momentum,
                         eps=eps, dtype=dtype)
        self.alpha, self.vth = alpha, vth

    def forward_then_lif(self, x, lif, smooth=False):
        """tdBN, then the neurons of ``lif`` (an LIF module), as one fused operation
        (``functional.td_batch_norm_lif``): the values of ``lif(self(x))``, keeping two arrays of
        x's size for backward instead of five.
        smooth: the LIF's smooth stand-in instead of Heaviside spikes."""
        self._count_batch()
        return F.td_batch_norm_lif(x, self.weight, self.bias, self.running_mean,
                                   self.running_var, training=self.training, scale=self.scale,
                                   lif_params=lif.params, smooth=smooth, momentum=self.momentum,
                                   eps=self.eps)

    def forward_then_lif_summed(self, x, lif, decay, smooth=False):
        """In training mode, sum_t decay^(T-1-t) o_t for the spikes o of ``forward_then_lif``,
        as one operation that never keeps o (``functional.td_batch_norm_lif_membrane``)."""
        if not self.training:
            raise RuntimeError("forward_then_lif_summed normalises with batch statistics: "
                               "call it in training mode (in eval mode the decoder block's "
                               "one eval operation sums its spikes)")
        self._count_batch()
        return F.td_batch_norm_lif_membrane(x, self.weight, self.bias, self.running_mean,
                                            self.running_var, scale=self.scale,
                                            lif_params=lif.params, smooth=smooth,
                                            momentum=self.momentum, eps=self.eps, decay=decay)


class LIF(Module):
    """Multi-step LIF neurons (no parameters); see ``snnvae.functional.lif``."""

    def __init__(self, vth=0.2, tau=0.25, aa=0.5, window_center=0.0, detach_reset=False):
        super().__init__()
        self.params = F.LIFParams(vth, tau, aa, window_center, detach_reset)

    def forward(self, x):
        p = self.params
        return F.lif(x, p.vth, p.tau, p.aa, p.window_center, p.detach_reset)

    def extra_repr(self):
        p = self.params
        return f"Vth {p.vth}, tau {p.tau}, window |u - {p.window_center}| < {p.aa}"


class PSP(Module):
    def __init__(self, tau_s=2.0):
        super().__init__()
        self.tau_s = tau_s

    def forward(self, x):
        return F.psp(x, self.tau_s)


class MembraneOutput(Module):
    """(T, ...) -> (...): sum_t decay^(T-1-t) x_t."""

    def __init__(self, decay=0.8):
        super().__init__()
        self.decay = decay

    def forward(self, x):
        return F.membrane_output(x, self.decay)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)


class Reshape(Module):
    """Reshape the trailing axes from index ``start`` on to ``shape`` (e.g. flatten C, H, W)."""

    def __init__(self, start, shape):
        super().__init__()
        self.start, self.shape = start, tuple(shape)

    def forward(self, x):
        return F.reshape(x, (*x.shape[:self.start], *self.shape))
