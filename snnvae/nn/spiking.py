"""Spiking blocks: weighted layer -> optional tdBN -> optional LIF, in one module.

These mirror the official tdLinear / tdConv / tdConvTranspose (parameter names ``weight``,
``bias``, ``bn.weight``, ``bn.bias`` and the tdBN buffers), so state dicts map one to one.
"""
from __future__ import annotations

import contextlib

import numpy as np

from .. import functional as F
from ..autograd import Tensor, no_grad, records_graph
from ..device import contiguous
from .layers import LIF, Conv2d, ConvTranspose2d, Linear, TdBatchNorm


class _SpikingMixin:
    def _attach(self, out_channels, bn, spike, alpha, dtype, lif_options):
        self.bn = TdBatchNorm(out_channels, alpha=alpha, dtype=dtype) if bn else None
        self.spike = LIF(**(lif_options or {})) if spike else None
        self.firing_rates = None   # a list while monitored (see monitor_firing_rates)

    def _fuses_bn_lif(self):
        """Whether tdBN and LIF run as one operation (both present, spiking or smooth mode)."""
        return (self.bn is not None and self.spike is not None and _fusion[0]
                and F.current_spike_mode() in ("spike", "smooth"))

    def forward(self, x):
        return self.neurons(super().forward(x))

    def neurons(self, y):
        """What follows the weighted layer: tdBN (training mode: batch statistics, and the
        running ones updated), then LIF, on its output y (T, N, C, ...) Tensor -> spikes."""
        if self._fuses_bn_lif():
            y = self.bn.forward_then_lif(y, self.spike, smooth=F.current_spike_mode() == "smooth")
        else:
            if self.bn is not None:
                y = self.bn(y)
            if self.spike is not None:
                y = self.spike(y)
        self._record_rate(y.data)
        return y

    def _record_rate(self, spikes):
        """While monitored (``monitor_firing_rates``, which only watches blocks with a neuron),
        note the mean of these output spikes."""
        if self.firing_rates is not None:
            self.firing_rates.append(float(spikes.mean()))

    def step(self, x_t, state=None):
        """One time step in eval mode: x_t array (N, ...) -> (output (N, ...), new state).

        The LIF state (u, o) is carried from call to call (None at t = 0). Exact in eval mode,
        where tdBN uses its running statistics and the layer is causal in time.
        """
        self._require_eval_mode()
        with no_grad():
            y = super().forward(Tensor(x_t[None]))
            if self.bn is not None:
                y = self.bn(y)
        y = y.data[0]
        if self.spike is None:
            return y, None
        u_prev, o_prev = state if state is not None else (np.zeros_like(y), np.zeros_like(y))
        p = self.spike.params
        o, u = F.lif_step(y, u_prev, o_prev, p.vth, p.tau)
        self._record_rate(o)                   # one entry per step: their mean is the pass's
        return o, (u, o)

    def _require_eval_mode(self):
        if self.training:
            raise RuntimeError(f"{type(self).__name__}.step is only exact in eval mode; call "
                               f".eval() on the model first")


class SpikingLinear(_SpikingMixin, Linear):
    """(T, N, F_in) -> (T, N, F_out): linear, tdBN(alpha), LIF."""

    def __init__(self, in_features, out_features, bias=True, *, bn=True, spike=True, alpha=1.0,
                 rng, dtype=np.float32, lif_options=None):
        super().__init__(in_features, out_features, bias, rng=rng, dtype=dtype)
        self._attach(out_features, bn, spike, alpha, dtype, lif_options)

    def step(self, x_t, state=None):
        """One time step in eval mode: x_t array (N, F_in) -> (spikes (N, F_out), new state).

        With tdBN and LIF, one operation (``F.linear_tdbn_lif_step_eval``: the values of
        linear, tdBN and ``lif_step`` one after the other). The state is (u, o, W^T): the LIF
        state, and the weight transposed once at t = 0 (state None) for the whole run, so a
        run sees the weights it started with. Without tdBN or LIF, the three steps of
        ``_SpikingMixin.step``."""
        if self.bn is None or self.spike is None:
            return super().step(x_t, state)
        self._require_eval_mode()
        if state is None:
            zeros = np.zeros((x_t.shape[0], self.out_features), dtype=x_t.dtype, like=x_t)
            state = (zeros, zeros, contiguous(self.weight.data.T))
        u_prev, o_prev, weight_t = state
        bn = self.bn
        o, u = F.linear_tdbn_lif_step_eval(
            x_t, weight_t, None if self.bias is None else self.bias.data, bn.weight.data,
            bn.bias.data, bn.running_mean, bn.running_var, u_prev, o_prev, scale=bn.scale,
            lif_params=self.spike.params, eps=bn.eps)
        self._record_rate(o)
        return o, (u, o, weight_t)


class SpikingConv2d(_SpikingMixin, Conv2d):
    """(T, N, C_in, H, W) -> (T, N, C_out, Ho, Wo): conv, tdBN(alpha), LIF."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=0, bias=True,
                 *, bn=True, spike=True, alpha=1.0, rng, dtype=np.float32, lif_options=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias, rng=rng,
                         dtype=dtype)
        self._attach(out_channels, bn, spike, alpha, dtype, lif_options)


class SpikingConvTranspose2d(_SpikingMixin, ConvTranspose2d):
    """(T, N, C_in, H, W) -> (T, N, C_out, Ho, Wo): transposed conv, tdBN(alpha), LIF."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=0,
                 output_padding=0, bias=True, *, bn=True, spike=True, alpha=1.0, rng,
                 dtype=np.float32, lif_options=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, output_padding,
                         bias, rng=rng, dtype=dtype)
        self._attach(out_channels, bn, spike, alpha, dtype, lif_options)

    def forward(self, x):
        """In eval mode with nothing to differentiate, the whole block is one operation
        (``F.conv_transpose2d_tdbn_lif_eval``: the same spikes, without storing the transposed
        convolution's output); otherwise the layer, then tdBN -> LIF."""
        if not self.runs_as_one_eval_op(x):
            return super().forward(x)
        y = F.conv_transpose2d_tdbn_lif_eval(x, **self._eval_op_arguments())
        self._record_rate(y.data)
        return y

    def runs_as_one_eval_op(self, x):
        """Whether ``forward(x)`` is the one eval-mode operation: tdBN and LIF fused, tdBN in
        eval mode, a time-first input, and no gradient to record."""
        return (self._fuses_bn_lif() and not self.bn.training and x.ndim == 5
                and not records_graph(x, *self.parameters()))

    def sums_over_time(self, x):
        """Whether ``summed_over_time(x, decay)`` runs as one operation: the eval one (see
        ``runs_as_one_eval_op``) or, in training mode, the transposed convolution and then
        tdBN -> LIF -> sum over time fused; tdBN and LIF fused in either case, and no firing
        rate to record (the spikes are never stored)."""
        return (self._fuses_bn_lif() and x.ndim == 5 and self.firing_rates is None
                and (self.bn.training or self.runs_as_one_eval_op(x)))

    def summed_over_time(self, x, decay):
        """sum_t decay^(T-1-t) forward(x)_t (N, C_out, Ho, Wo) without storing the spikes, for a
        read-out that sums them so: in eval mode with nothing to differentiate one operation
        (``F.conv_transpose2d_tdbn_lif_membrane_eval``); in training mode the transposed
        convolution, then ``TdBatchNorm.forward_then_lif_summed``. Only where
        ``sums_over_time(x)``; no firing rate is recorded."""
        if not self.sums_over_time(x):
            raise RuntimeError("summed_over_time needs tdBN and LIF fused, a time-first input "
                               "and no firing-rate monitor (see sums_over_time); call forward "
                               "and sum the spikes")
        if self.bn.training:
            y = ConvTranspose2d.forward(self, x)
            return self.bn.forward_then_lif_summed(y, self.spike, decay,
                                                   smooth=F.current_spike_mode() == "smooth")
        return F.conv_transpose2d_tdbn_lif_membrane_eval(x, decay=decay,
                                                         **self._eval_op_arguments())

    def _eval_op_arguments(self):
        bn = self.bn
        return dict(weight=self.weight, bias=self.bias, gamma=bn.weight, beta=bn.bias,
                    running_mean=bn.running_mean, running_var=bn.running_var,
                    stride=self.stride, padding=self.padding,
                    output_padding=self.output_padding, scale=bn.scale,
                    lif_params=self.spike.params, smooth=F.current_spike_mode() == "smooth",
                    eps=bn.eps)


_fusion = [True]


@contextlib.contextmanager
def unfused_blocks():
    """Inside the block, spiking blocks run tdBN and LIF as two separate operations (as the
    official code does) instead of the fused one: the same results, more memory. For
    comparisons and benchmarks."""
    previous = _fusion[0]
    _fusion[0] = False
    try:
        yield
    finally:
        _fusion[0] = previous


@contextlib.contextmanager
def monitor_firing_rates(model):
    """Inside the block, every spiking block of ``model`` records the mean of its output spikes
    at each forward call, and at each ``step`` call of eval-mode stepping (one entry per step,
    each over the same N rows, so their mean is the rate of the whole pass). Yields a dict
    name -> list of rates, filled as the model runs."""
    blocks = {name.rstrip("."): m for name, m in model.named_modules()
              if isinstance(m, _SpikingMixin) and m.spike is not None}
    rates = {}
    for name, block in blocks.items():
        block.firing_rates = rates.setdefault(name, [])
    try:
        yield rates
    finally:
        for block in blocks.values():
            block.firing_rates = None
