"""One eval-mode time step of a spiking linear block in one pass: linear -> tdBN with the
running statistics -> LIF with carried state.

For rows r (the samples of one step), wt = w^T (F_in, F_out):

    y[r]   = b + sum_{i : x[r, i] != 0} x[r, i] wt[i]               (event-driven linear)
    u_t[r] = tau u_{t-1}[r] (1 - o_{t-1}[r]) + gain (y[r] - mean) invstd + beta
    o_t[r] = [u_t[r] > Vth]                    gain = scale gamma, invstd = 1 / sqrt(var + eps)

Why: FSVAE's prior generates z one step at a time, and its posterior runs so in eval mode:
three spiking linears per step, 16 steps, 64 rows. As three kernels per layer (a BLAS
product, tdBN, LIF) a batch made 144 small calls, each waking the threads of BLAS or Numba,
and the products spent more time there than in arithmetic. The inputs are spikes (28 % ones
in FSVAE's latent networks), so the rows of wt of the active inputs are added (a multiply-add
by the input's value, exact for a spike) and y never leaves the L1 cache before its spikes
are made. One parallel iteration per row, each writing only its own row of o and u.

Where the input is mostly nonzero (more than ``EVENTS_MAX_RATE``) BLAS computes y, and the
same tdBN -> LIF rows follow. tdBN -> LIF is ``neuron_steps.bn_lif_step``, so the membranes
and spikes are bit for bit those of ``tdbn_forward_eval`` then ``lif_step`` on the same y;
y itself equals BLAS's up to the order of the additions.

After editing ``event_driven.add_weighted_rows`` or ``neuron_steps``, delete
``snnvae/kernels/__pycache__/*.nb[ic]`` (Numba caches a kernel by its own file).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .event_driven import add_weighted_rows
from .neuron_steps import bn_lif_step

_JIT = dict(cache=True, nogil=True)

# Above this fraction of nonzero inputs the dense product wins: the event-driven rows cost
# about as much as BLAS at half the inputs active (measured on FSVAE's 512 -> 2560 layer).
EVENTS_MAX_RATE = 0.5


@njit(parallel=True, **_JIT)
def _step_rows(x, wt, init, y, events, mean, invstd, gain, beta, u_prev, o_prev, u, o, vth, tau,
               one, zero):
    """Per row r: with ``events``, y[r] = init + the rows of wt of x[r]'s nonzero inputs
    (otherwise y[r] is already the linear output); then tdBN -> LIF into u[r], o[r]."""
    R, F_in = x.shape
    for r in prange(R):
        yr = y[r]
        if events:
            xr = x[r]
            rows = np.empty(F_in, dtype=np.int64)
            values = np.empty(F_in, dtype=y.dtype)
            n = 0
            for i in range(F_in):              # listed without a branch, as in scatter_image
                rows[n] = i
                values[n] = xr[i]
                n += xr[i] != 0
            yr[:] = init
            add_weighted_rows(yr, wt, rows, values, n)
        bn_lif_step(yr, mean, invstd, gain, beta, u_prev[r], o_prev[r], u[r], o[r], vth, tau,
                    one, zero, zero, one, zero, False)


def step_rows(x, wt, init, mean, invstd, gain, beta, u_prev, o_prev, vth, tau, one, zero):
    """x (N, F_in), wt (F_in, F_out) and every per-feature value (F_out,) in x's dtype, the
    state u_prev, o_prev (N, F_out), constants typed alike -> (o, u) (N, F_out). The caller
    (``cpu.linear_tdbn_lif_step_eval``) prepares the tdBN constants as its other tdBN kernels
    do."""
    x = np.ascontiguousarray(x)
    events = np.count_nonzero(x) <= EVENTS_MAX_RATE * x.size
    y = np.empty((x.shape[0], wt.shape[1]), dtype=x.dtype) if events else x @ wt + init
    u, o = np.empty_like(y), np.empty_like(y)
    _step_rows(x, np.ascontiguousarray(wt), init, y, events, mean, invstd, gain, beta,
               np.ascontiguousarray(u_prev), np.ascontiguousarray(o_prev), u, o, vth, tau, one,
               zero)
    return o, u
