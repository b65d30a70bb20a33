"""tdBN followed by LIF neurons as one differentiable operation (the core of a spiking block).

For a time-first input x (T, N, C, ...) (channel axis 2), with tdBN's scale = alpha * Vth:

    y = scale * gamma_c * (x - mean_c) * invstd_c + beta_c      (tdBN, see ``batchnorm``)
    o = LIF(y)                                                  (see ``lif``)

The result and the gradients are those of ``lif(td_batch_norm(x))``; the difference is what
stays in memory until backward. Run as two operations, tdBN saves xhat and LIF saves u and the
spikes o (three arrays of x's size); fused, only x is saved, and backward recomputes xhat, y, u
and o from x with the forward's arithmetic (the same values, bit for bit). The spikes o are
then kept only by the next weighted layer, as bytes (``_saved``). The forward also
writes one array instead of four, so it is faster as well.

Training mode normalises with the batch statistics and updates the running ones in place, as
``td_batch_norm`` does; eval mode uses the running statistics as constants.
"""
from __future__ import annotations

from .. import backend
from ..autograd import Function, as_tensor
from ..device import contiguous
from ._checks import check_float, check_same_dtype
from .batchnorm import update_running_statistics
from .lif import LIFParams


def _as_tncs(x):
    """(T, N, C, ...) -> contiguous (T, N, C, S)."""
    return contiguous(x).reshape(*x.shape[:3], -1)


class TdBNLIF(Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, scale, eps, p: LIFParams, smooth, running_mean,
                running_var, training, stats_out):
        x4 = _as_tncs(x)
        k = backend.kernels()
        lif_args = (p.vth, p.tau, p.aa, p.window_center, smooth)
        if training:
            o, mean, var, invstd = k.tdbn_lif_forward_train(x4, gamma, beta, scale, eps, *lif_args)
            stats_out.update(mean=mean, var=var, n=x4.shape[0] * x4.shape[1] * x4.shape[3])
        else:
            o, mean, invstd = k.tdbn_lif_forward_eval(x4, gamma, beta, scale, running_mean,
                                                      running_var, eps, *lif_args)
        ctx.save_for_backward(x4, mean, invstd, gamma, beta, scale, p, smooth, training, x.shape)
        return o.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        x4, mean, invstd, gamma, beta, scale, p, smooth, training, shape = ctx.saved
        gx, ggamma, gbeta = backend.kernels().tdbn_lif_backward(
            g.reshape(x4.shape), x4, mean, invstd, gamma, beta, scale, p.vth, p.tau, p.aa,
            p.window_center, smooth, p.detach_reset, training)
        return gx.reshape(shape), ggamma, gbeta, None, None, None, None, None, None, None, None


def _checked_inputs(op, x, gamma, beta, running_mean):
    """x, gamma, beta as tensors, after checking dtypes and that x is (T, N, C, ...) with
    gamma, beta and the running statistics of shape (C,)."""
    x, gamma, beta = as_tensor(x), as_tensor(gamma), as_tensor(beta)
    check_float(f"{op} input", x.data)
    check_same_dtype(op, x=x.data, gamma=gamma.data, beta=beta.data)
    C = x.shape[2] if x.ndim >= 3 else None
    if C is None or gamma.shape != (C,) or beta.shape != (C,) or running_mean.shape != (C,):
        raise ValueError(f"{op}: input of shape {x.shape} must be (T, N, C, ...) with "
                         f"gamma/beta/running stats of shape (C,), got "
                         f"{gamma.shape}/{beta.shape}/{running_mean.shape}")
    return x, gamma, beta


def td_batch_norm_lif(x, gamma, beta, running_mean, running_var, *, training, scale=0.2,
                      lif_params: LIFParams = LIFParams(), smooth=False, momentum=0.1, eps=1e-5):
    """Spikes o = LIF(tdBN(x)) of a time-first x (T, N, C, ...).

    scale: tdBN's alpha * Vth (0.2 for alpha 1). smooth: the LIF's smooth stand-in instead of
    Heaviside spikes. running_mean, running_var (C,) are updated in place in training mode."""
    x, gamma, beta = _checked_inputs("td_batch_norm_lif", x, gamma, beta, running_mean)
    stats = {}
    o = TdBNLIF.apply(x, gamma, beta, float(scale), eps, lif_params, bool(smooth),
                      running_mean, running_var, bool(training), stats)
    if training:
        update_running_statistics(running_mean, running_var, stats["mean"], stats["var"],
                                  stats["n"], momentum, x.shape)
    return o


class TdBNLIFMembrane(Function):
    """tdBN (batch statistics) -> LIF -> sum_t decay^(T-1-t) o_t, training mode: saves only x,
    like ``TdBNLIF``; neither the spikes nor their gradient exist as (T, N, C, S) arrays on the
    CPU (the sum is taken as the spikes are made, and backward forms decay^(T-1-t) g step by
    step)."""

    @staticmethod
    def forward(ctx, x, gamma, beta, scale, eps, p: LIFParams, smooth, decay, stats_out):
        x4 = _as_tncs(x)
        summed, mean, var, invstd = backend.kernels().tdbn_lif_membrane_forward_train(
            x4, gamma, beta, scale, eps, p.vth, p.tau, p.aa, p.window_center, smooth, decay)
        stats_out.update(mean=mean, var=var, n=x4.shape[0] * x4.shape[1] * x4.shape[3])
        ctx.save_for_backward(x4, mean, invstd, gamma, beta, scale, p, smooth, decay, x.shape)
        return summed.reshape(x.shape[1:])

    @staticmethod
    def backward(ctx, g):
        x4, mean, invstd, gamma, beta, scale, p, smooth, decay, shape = ctx.saved
        gx, ggamma, gbeta = backend.kernels().tdbn_lif_membrane_backward(
            contiguous(g).reshape(x4.shape[1:]), x4, mean, invstd, gamma, beta, scale, p.vth,
            p.tau, p.aa, p.window_center, smooth, p.detach_reset, decay)
        return gx.reshape(shape), ggamma, gbeta, None, None, None, None, None, None


def td_batch_norm_lif_membrane(x, gamma, beta, running_mean, running_var, *, scale=0.2,
                               lif_params: LIFParams = LIFParams(), smooth=False, momentum=0.1,
                               eps=1e-5, decay=0.8):
    """sum_t decay^(T-1-t) o_t (N, C, ...) for the spikes o = LIF(tdBN(x)) of a time-first x
    (T, N, C, ...), in training mode (batch statistics; the running ones updated in place):
    ``membrane_output(td_batch_norm_lif(x, ..., training=True), decay)`` as one operation."""
    x, gamma, beta = _checked_inputs("td_batch_norm_lif_membrane", x, gamma, beta,
                                     running_mean)
    stats = {}
    summed = TdBNLIFMembrane.apply(x, gamma, beta, float(scale), eps, lif_params, bool(smooth),
                                   float(decay), stats)
    update_running_statistics(running_mean, running_var, stats["mean"], stats["var"],
                              stats["n"], momentum, x.shape)
    return summed
