"""A spiking decoder block in eval mode as one pass over its input spikes: transposed
convolution (event-driven, ``scatter``) -> tdBN with the running statistics -> LIF.

Run as separate kernels, the block writes the transposed convolution's output y (T, N, C_out,
Ho, Wo), the largest array of the decoder (134 MB for FSVAE's last block at batch 64), and reads
it back for tdBN -> LIF. Here y never exists. One parallel iteration takes one sample n and
walks time; at step t it

1. scatters the events of x[t, n] into a channels-last accumulator acc (Ho*Wo, C_out) that
   starts at the bias (``scatter.scatter_image``),
2. moves the Ho*Wo*C_out neurons of that sample one step on (``neuron_steps.bn_lif_step``
   over acc flattened, with the sample's membranes u and previous spikes s, laid out as acc):

       u_t = tau u_{t-1} (1 - s_{t-1}) + gain (acc - mean) invstd + beta,    s_t = [u_t > vth]

   The per-channel constants come tiled to that layout (mean[r * C_out + c] = mean_c), so the
   step is one long loop that vectorises; a call per pixel (32 channels) ran 1.6x slower.

3. transposes the spikes s_t into o[t, n] (C_out, Ho, Wo), or, for the read-out
   (``conv_transpose2d_tdbn_lif_membrane_eval``), adds coef_t s_t to a channels-last sum
   that is transposed into the output once, after the last step.

acc and the two buffers each of u and s that steps use in turn (Ho*Wo*C_out values each, 128
KB for the 32 x 32 x 32 block in float32) stay in cache from step to step. The values are those
of the separate kernels bit for bit: the same sums in the same order, the same step
arithmetic. Eval mode only: training needs y for backward, and normalises with batch
statistics that need all of y first.

Threads: ``prange`` over the samples n, each writing only o[:, n]; with fewer samples than
threads some cores idle, so ``cpu`` runs the separate kernels then.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .neuron_steps import bn_lif_step
from .scatter import bias_init, fill_rows, scatter_image, store_channels_first, transposed_plan

_JIT = dict(cache=True, nogil=True)


@njit(parallel=True, **_JIT)
def _block_forward(x, taps, init, reach_h, reach_w, mean, invstd, gain, beta, Ho, Wo, o, coef,
                   summed, vth, tau, width, center, half, one, zero, smooth):
    """x (T, N, C_in, H, W) -> o (T, N, C_out, Ho, Wo), or, when ``coef`` (T,) has values,
    summed (N, C_out, Ho, Wo) = sum_t coef[t] o_t instead (o is then not written: pass an
    empty one). The tdBN constants come tiled to the channels-last layout (Ho*Wo*C_out,)."""
    T, N = x.shape[0], x.shape[1]
    C_out = taps.shape[3]
    L = Ho * Wo
    J = L * C_out                                        # neurons of one sample
    membrane = coef.size > 0
    for n in prange(N):
        acc = np.empty((L, C_out), dtype=x.dtype)
        u = np.zeros((2, L, C_out), dtype=x.dtype)      # used in turn: step t reads t % 2
        s = np.zeros((2, L, C_out), dtype=x.dtype)
        total = np.zeros(J if membrane else 0, dtype=x.dtype)
        for t in range(T):
            fill_rows(acc, init)
            scatter_image(x[t, n], taps, reach_h, reach_w, Wo, acc)
            now, nxt = t % 2, (t + 1) % 2
            spikes = s[nxt].reshape(J)
            bn_lif_step(acc.reshape(J), mean, invstd, gain, beta, u[now].reshape(J),
                        s[now].reshape(J), u[nxt].reshape(J), spikes, vth, tau, width,
                        center, half, one, zero, smooth)
            if membrane:
                for k in range(J):
                    total[k] += coef[t] * spikes[k]
            else:
                store_channels_first(s[nxt], o[t, n].reshape(C_out, L))
        if membrane:
            store_channels_first(total.reshape(L, C_out), summed[n].reshape(C_out, L))


def _run(x, w, b, stride, padding, output_padding, mean, invstd, gain, beta, lif_constants,
         smooth, coef):
    """The block on x, its spikes stored (coef empty) or summed over time with ``coef``."""
    dtype = x.dtype
    T, N = x.shape[:2]
    taps, reaches, (Ho, Wo) = transposed_plan(x.shape, w, dtype, stride, padding, output_padding)
    C_out = w.shape[1]
    if coef.size:
        o, summed = np.empty((0, 0, 0, 0, 0), dtype), np.empty((N, C_out, Ho, Wo), dtype)
    else:
        o, summed = np.empty((T, N, C_out, Ho, Wo), dtype), np.empty((0, 0, 0, 0), dtype)
    L = Ho * Wo
    _block_forward(np.ascontiguousarray(x), taps, bias_init(b, C_out, dtype), *reaches,
                   np.tile(mean, L), np.tile(invstd, L), np.tile(gain, L), np.tile(beta, L),
                   Ho, Wo, o, coef.astype(dtype), summed, *lif_constants, smooth)
    return summed if coef.size else o


def conv_transpose2d_tdbn_lif_eval(x, w, b, stride, padding, output_padding, mean, invstd, gain,
                                   beta, lif_constants, smooth):
    """x (T, N, C_in, H, W) mostly 0, w (C_in, C_out, kh, kw), b (C_out,) or None; mean, invstd,
    gain = scale gamma, beta (C_out,) in x's dtype; lif_constants (vth, tau, width, center, 1/2,
    1, 0) in x's dtype -> spikes o (T, N, C_out, Ho, Wo)."""
    return _run(x, w, b, stride, padding, output_padding, mean, invstd, gain, beta,
                lif_constants, smooth, np.empty(0, x.dtype))


def conv_transpose2d_tdbn_lif_membrane_eval(x, w, b, stride, padding, output_padding, mean,
                                            invstd, gain, beta, lif_constants, smooth, coef):
    """As ``conv_transpose2d_tdbn_lif_eval``, but the spikes summed over time with the
    membrane output's coefficients coef (T,) -> (N, C_out, Ho, Wo). The sum accumulates in
    the channels-last layout beside the neurons, step by step; the spikes, T times larger
    than the sum, are never written out."""
    return _run(x, w, b, stride, padding, output_padding, mean, invstd, gain, beta,
                lif_constants, smooth, coef)
