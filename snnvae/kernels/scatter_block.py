"""A spiking decoder block in eval mode as one pass over its input spikes: transposed
convolution (event-driven, ``scatter``) -> tdBN with the running statistics -> LIF.

Run as separate kernels, the block writes the transposed convolution's output y (T, N, C_out,
Ho, Wo), the largest array of the decoder (134 MB for FSVAE's last block at batch 64), and reads
it back for tdBN -> LIF. Here y never exists. One parallel iteration takes one sample n and
walks time; at step t it

1. scatters the events of x[t, n] into a channels-last accumulator acc (Ho*Wo, C_out) that
   starts at the bias (``scatter.scatter_image``, in runs of kernel columns),
2. moves the Ho*Wo*C_out neurons of that sample one step on, chunk by chunk
   (``neuron_steps.bn_lif_step_in_place`` over acc flattened, with the sample's membranes u
   and previous spikes s, laid out as acc, overwritten by the new ones; acc is set back to
   the bias as it is read):

       u_t = tau u_{t-1} (1 - s_{t-1}) + gain (acc - mean) invstd + beta,    s_t = [u_t > vth]

   The per-channel constants come tiled to one chunk of whole pixels (mean[r * C_out + c] =
   mean_c), so each chunk's step is one loop that vectorises; a call per pixel (32
   channels) ran 1.6x slower.

3. transposes the spikes s_t into o[t, n] (C_out, Ho, Wo), or, for the read-out
   (``conv_transpose2d_tdbn_lif_membrane_eval``), adds coef_t s_t to a channels-last sum
   that is transposed into the output once, after the last step.

acc, u and s (Ho*Wo*C_out values each, 128 KB for the 32 x 32 x 32 block in float32) stay in
the L2 cache from step to step. The values are those of the separate kernels bit for bit: the
same sums in the same order, the same step arithmetic. Eval mode only: training needs y for
backward, and normalises with batch statistics that need all of y first.

Threads: ``prange`` over the samples n, each writing only o[:, n]; with fewer samples than
threads some cores idle, so ``cpu`` runs the separate kernels then.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .neuron_steps import bn_lif_step_in_place
from .scatter import bias_init, fill_rows, scatter_image, store_channels_first, transposed_plan

_JIT = dict(cache=True, nogil=True)

# The neuron step runs on chunks of this many neurons (rounded down to whole pixels), with the
# tdBN constants tiled to one chunk: 4 x 8 KB in float32 that stay in the L1 cache, where
# constants tiled to a whole sample (Ho*Wo*C_out each, 128 KB for the 32 x 32 x 32 block)
# pushed the state out of the L2 cache. Chunks of 512 ran 1.7x slower (the per-call set-up).
_CHUNK_NEURONS = 2048


@njit(parallel=True, **_JIT)
def _block_forward(x, taps, init, reach_h, j0, q0, count, mean, invstd, gain, beta, Ho, Wo, o,
                   coef, summed, vth, tau, width, center, half, one, zero, smooth):
    """x (T, N, C_in, H, W) -> o (T, N, C_out, Ho, Wo), or, when ``coef`` (T,) has values,
    summed (N, C_out, Ho, Wo) = sum_t coef[t] o_t instead (o is then not written: pass an
    empty one). taps, reach_h, j0, q0, count: ``scatter.walk_plan``. init (the bias) and the
    tdBN constants come tiled to one chunk of neurons in the channels-last layout (a multiple
    of C_out values)."""
    T, N, C_in = x.shape[0], x.shape[1], x.shape[2]
    C_out = taps.shape[3]
    L = Ho * Wo
    J = L * C_out                                        # neurons of one sample
    chunk = init.shape[0]
    membrane = coef.size > 0
    for n in prange(N):
        acc = np.empty(J, dtype=x.dtype)
        u = np.zeros(J, dtype=x.dtype)
        s = np.zeros(J, dtype=x.dtype)
        total = np.zeros(J if membrane else 0, dtype=x.dtype)
        channels = np.empty(C_in, dtype=np.int64)
        values = np.empty(C_in, dtype=x.dtype)
        fill_rows(acc.reshape(L, C_out), init[:C_out])
        for t in range(T):
            scatter_image(x[t, n], taps, reach_h, j0, q0, count, Wo, acc, channels, values)
            for k0 in range(0, J, chunk):
                k1 = min(k0 + chunk, J)
                m = k1 - k0
                bn_lif_step_in_place(acc[k0:k1], mean[:m], invstd[:m], gain[:m], beta[:m],
                                     u[k0:k1], s[k0:k1], init[:m], vth, tau, width, center,
                                     half, one, zero, smooth)
            if membrane:
                for k in range(J):
                    total[k] += coef[t] * s[k]
            else:
                store_channels_first(s.reshape(L, C_out), o[t, n].reshape(C_out, L))
        if membrane:
            store_channels_first(total.reshape(L, C_out), summed[n].reshape(C_out, L))


def _run(x, w, b, stride, padding, output_padding, mean, invstd, gain, beta, lif_constants,
         smooth, coef):
    """The block on x, its spikes stored (coef empty) or summed over time with ``coef``."""
    dtype = x.dtype
    T, N = x.shape[:2]
    plan, (Ho, Wo) = transposed_plan(x.shape, w, dtype, stride, padding, output_padding)
    C_out = w.shape[1]
    if coef.size:
        o, summed = np.empty((0, 0, 0, 0, 0), dtype), np.empty((N, C_out, Ho, Wo), dtype)
    else:
        o, summed = np.empty((T, N, C_out, Ho, Wo), dtype), np.empty((0, 0, 0, 0), dtype)
    pixels = max(1, _CHUNK_NEURONS // C_out)

    def tiled(values):
        return np.tile(np.asarray(values, dtype=dtype), pixels)
    _block_forward(np.ascontiguousarray(x), plan[0], tiled(bias_init(b, C_out, dtype)),
                   *plan[1:], tiled(mean), tiled(invstd), tiled(gain), tiled(beta), Ho, Wo, o,
                   coef.astype(dtype), summed, *lif_constants, smooth)
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
