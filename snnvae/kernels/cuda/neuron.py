"""CUDA kernels of the neurons and temporal filters: LIF, PSP and the membrane output.

The same names, signatures and results as ``numpy_ref`` and ``cpu`` (the equations are
derived there):

    LIF          u_t = tau u_{t-1} (1 - o_{t-1}) + x_t,          u_{-1} = o_{-1} = 0
                 o_t = H(u_t - Vth)  (spikes),  or the smooth stand-in
                 o_t = h(u_t) = clip((u_t - c) / (2 aa) + 1/2, 0, 1)
    LIF BPTT     gu_t = (go_t - tau u_t gu_{t+1}) h'(u_t) + tau (1 - o_t) gu_{t+1},   gx_t = gu_t
                 (the reset term tau u_t gu_{t+1} is dropped when the reset is detached),
                 h'(u) = 1[|u - c| < aa] / (2 aa)
    PSP          syn_t = syn_{t-1} + (x_t - syn_{t-1}) / tau_s
                 gs_t = gy_t + (1 - 1/tau_s) gs_{t+1},   gx_t = gs_t / tau_s
    membrane     y = sum_t decay^(T-1-t) x_t;   gx_t = decay^(T-1-t) gy

Shapes: x (T, M) time first, M every other axis flattened (an array (T, ...) is read as
(T, M)); ``lif_step`` works on one step (M,); ``membrane_forward`` returns (M,).

One mapping of threads to data for every kernel here: a recurrence is sequential in t but
independent across the M neurons, so thread m owns neuron m and walks t itself, carrying the
state (u and o, or syn) in registers. At step t the 32 threads of a warp read x[t, m .. m+31],
consecutive addresses of row t of a row-major (T, M) array, so every load and store is
coalesced. A grid-stride loop covers M whatever the launch size.

Arithmetic happens in the array's dtype: the constants (Vth, tau, ...) arrive cast to it
(``lif_constants``, ``launch.typed``), because a Python float inside a kernel is a float64 and would
promote float32 arithmetic to float64. The CPU kernels do the same, so the two agree up to
rounding: the GPU compiler fuses a multiply and an add into one FMA (one rounding instead of
two), so a float32 result may differ from the CPU's in the last bit.

The device functions ``lif_update``, ``spike_output`` and ``membrane_gradient`` are shared
with the fused tdBN + LIF kernels of ``batchnorm.py``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from . import launch

# --------------------------------------------------------------------------------------------
# Host side helpers
# --------------------------------------------------------------------------------------------


def lif_constants(dtype, vth, tau, aa, center):
    """The LIF's constants in the array's dtype, as the one tuple the kernels take:
    (vth, tau, window width 2 aa, window centre, 1/2, 1, 0, 1 / (2 aa), aa)."""
    t = np.dtype(dtype).type
    width = t(2.0 * aa)
    return (t(vth), t(tau), width, t(center), t(0.5), t(1.0), t(0.0), t(1.0) / width, t(aa))


LIF_ZERO = 6   # position of 0 in that tuple: the state of a neuron before t = 0


# --------------------------------------------------------------------------------------------
# Device functions: one neuron, one time step
# --------------------------------------------------------------------------------------------


@cuda.jit(device=True)
def membrane_potential(u_prev, o_prev, drive, lif):
    """u_t = tau u_{t-1} (1 - o_{t-1}) + x_t: leak, reset by the previous output, integrate."""
    vth, tau, width, center, half, one, zero, inv_width, aa = lif
    return tau * u_prev * (one - o_prev) + drive


@cuda.jit(device=True)
def spike_output(u, lif, smooth):
    """o_t from u_t: a spike (strictly above Vth) or the smooth stand-in h(u_t)."""
    vth, tau, width, center, half, one, zero, inv_width, aa = lif
    if smooth:
        return min(max((u - center) / width + half, zero), one)
    return one if u > vth else zero


@cuda.jit(device=True)
def lif_update(u_prev, o_prev, drive, lif, smooth):
    """One step of the neuron: (u_t, o_t) from the previous state and the input current."""
    u = membrane_potential(u_prev, o_prev, drive, lif)
    return u, spike_output(u, lif, smooth)


@cuda.jit(device=True)
def membrane_gradient(go, u, o, gu_next, lif, detach_reset):
    """gu_t = dL/du_t from go_t = dL/do_t and gu_{t+1} (see the module docstring)."""
    vth, tau, width, center, half, one, zero, inv_width, aa = lif
    go_total = go if detach_reset else go - tau * u * gu_next
    surrogate = inv_width if abs(u - center) < aa else zero
    return go_total * surrogate + tau * (one - o) * gu_next


# --------------------------------------------------------------------------------------------
# LIF
# --------------------------------------------------------------------------------------------


@cuda.jit
def _lif_forward_kernel(x, o, u, lif, smooth):
    """x, o, u (T, M). Thread -> neuron m (grid-stride over M), walking t = 0 .. T-1 with
    u_{t-1}, o_{t-1} in registers. At each t consecutive threads read x[t, m], x[t, m + 1], ...
    and write o and u at the same consecutive addresses: coalesced."""
    T, M = x.shape
    zero = lif[LIF_ZERO]
    for m in range(cuda.grid(1), M, cuda.gridsize(1)):
        u_t = o_t = zero
        for t in range(T):
            u_t, o_t = lif_update(u_t, o_t, x[t, m], lif, smooth)
            u[t, m] = u_t
            o[t, m] = o_t


def lif_forward(x, vth, tau, aa, center, smooth):
    """x (T, M) -> (o, u), both (T, M) in x's dtype."""
    host, x = launch.receive(x)
    o, u = launch.empty(x.shape, x.dtype), launch.empty(x.shape, x.dtype)
    x2 = launch.time_major(x)
    _lif_forward_kernel[launch.grid_1d(x2.shape[1])](
        x2, launch.time_major(o), launch.time_major(u), lif_constants(x.dtype, vth, tau, aa, center),
        bool(smooth))
    return launch.like_input(host, o, u)


@cuda.jit
def _lif_step_kernel(x_t, u_prev, o_prev, o, u, lif):
    """One time step, every array (M,). Thread -> neuron m (grid-stride); consecutive threads
    touch consecutive elements of each array: coalesced."""
    for m in range(cuda.grid(1), x_t.shape[0], cuda.gridsize(1)):
        u[m], o[m] = lif_update(u_prev[m], o_prev[m], x_t[m], lif, False)


def lif_step(x_t, u_prev, o_prev, vth, tau):
    """x_t, u_prev, o_prev (M,) -> spikes and potentials (o_t, u_t) of one step, x_t's dtype."""
    host, x_t, u_prev, o_prev = launch.receive(x_t, u_prev, o_prev)
    o, u = launch.empty(x_t.shape, x_t.dtype), launch.empty(x_t.shape, x_t.dtype)
    # aa and the centre only matter for the smooth output and the gradient; any value will do
    lif = lif_constants(x_t.dtype, vth, tau, 0.5, 0.0)
    _lif_step_kernel[launch.grid_1d(x_t.size)](*(launch.flat(a) for a in (x_t, u_prev, o_prev,
                                                                          o, u)), lif)
    return launch.like_input(host, o, u)


@cuda.jit
def _lif_backward_kernel(go, u, o, gx, lif, detach_reset):
    """go, u, o, gx (T, M). Thread -> neuron m (grid-stride), walking t = T-1 .. 0 with
    gu_{t+1} in a register. Row t of each array is read (and gx written) at consecutive
    addresses by consecutive threads: coalesced."""
    T, M = go.shape
    for m in range(cuda.grid(1), M, cuda.gridsize(1)):
        gu_next = lif[LIF_ZERO]
        for t in range(T - 1, -1, -1):
            gu = membrane_gradient(go[t, m], u[t, m], o[t, m], gu_next, lif, detach_reset)
            gx[t, m] = gu
            gu_next = gu


def lif_backward(go, u, o, tau, aa, center, detach_reset):
    """BPTT of ``lif_forward``: go, u, o (T, M) -> gx (T, M) in go's dtype."""
    host, go, u, o = launch.receive(go, u, o)
    dt = go.dtype
    gx = launch.empty(go.shape, dt)
    go2 = launch.time_major(go)
    # Vth is not needed: the surrogate is centred on `center`
    lif = lif_constants(dt, 0.0, tau, aa, center)
    _lif_backward_kernel[launch.grid_1d(go2.shape[1])](
        go2, launch.time_major(u), launch.time_major(o), launch.time_major(gx), lif, bool(detach_reset))
    return launch.like_input(host, gx)


# --------------------------------------------------------------------------------------------
# PSP filter
# --------------------------------------------------------------------------------------------


@cuda.jit
def _psp_forward_kernel(x, y, tau_s, zero):
    """x, y (T, M). Thread -> neuron m (grid-stride), walking t forwards with syn in a
    register; row t read and written at consecutive addresses by consecutive threads. syn is
    carried in x's dtype, as in numpy_ref (the Numba CPU kernel happens to carry a float64)."""
    T, M = x.shape
    for m in range(cuda.grid(1), M, cuda.gridsize(1)):
        syn = zero
        for t in range(T):
            syn = syn + (x[t, m] - syn) / tau_s
            y[t, m] = syn


@cuda.jit
def _psp_backward_kernel(gy, gx, tau_s, keep, zero):
    """gy, gx (T, M). Thread -> neuron m (grid-stride), walking t backwards with gs_{t+1} in a
    register; coalesced like the forward kernel. keep = 1 - 1/tau_s."""
    T, M = gy.shape
    for m in range(cuda.grid(1), M, cuda.gridsize(1)):
        gs = zero
        for t in range(T - 1, -1, -1):
            gs = gy[t, m] + keep * gs
            gx[t, m] = gs / tau_s


def _walk_neurons(kernel, x, *constants):
    """A (T, ...) result like x from ``kernel(x, out, *constants)``, one thread per neuron of
    x (T, ...) viewed as (T, M); the constants are cast to x's dtype."""
    out = launch.empty(x.shape, x.dtype)
    x2 = launch.time_major(x)
    kernel[launch.grid_1d(x2.shape[1])](x2, launch.time_major(out),
                                        *launch.typed(x.dtype, *constants))
    return out


def psp_forward(x, tau_s):
    """x (T, M) -> filtered y (T, M)."""
    host, x = launch.receive(x)
    return launch.like_input(host, _walk_neurons(_psp_forward_kernel, x, tau_s, 0.0))


def psp_backward(gy, tau_s):
    """gy (T, M) -> gx (T, M)."""
    host, gy = launch.receive(gy)
    # keep = 1 - 1/tau_s is computed in float64, then cast to the array's dtype (as numpy_ref;
    # the Numba CPU kernel keeps it and the state in float64)
    gx = _walk_neurons(_psp_backward_kernel, gy, tau_s, 1.0 - 1.0 / tau_s, 0.0)
    return launch.like_input(host, gx)


# --------------------------------------------------------------------------------------------
# Membrane-potential output
# --------------------------------------------------------------------------------------------


@cuda.jit
def _membrane_coefficients_kernel(coef, decay):
    """coef (T,): coef[t] = decay^(T-1-t), computed in float64 and rounded to coef's dtype on
    the store (as ``numpy_ref.membrane_coefficients``). Thread -> step t (grid-stride)."""
    T = coef.shape[0]
    for t in range(cuda.grid(1), T, cuda.gridsize(1)):
        coef[t] = math.pow(decay, T - 1.0 - t)


def _membrane_coefficients(T, decay, dtype):
    """The T coefficients as a device array, computed there: no host-to-device copy."""
    coef = launch.empty((T,), dtype)
    _membrane_coefficients_kernel[launch.grid_1d(T)](coef, float(decay))
    return coef


@cuda.jit
def _membrane_forward_kernel(x, coef, y, zero):
    """x (T, M), coef (T,), y (M,). Thread -> neuron m (grid-stride) summing over t in a
    register; at each t consecutive threads read consecutive x[t, m] (coalesced) and the same
    coef[t] (one broadcast load)."""
    T, M = x.shape
    for m in range(cuda.grid(1), M, cuda.gridsize(1)):
        acc = zero
        for t in range(T):
            acc += coef[t] * x[t, m]
        y[m] = acc


@cuda.jit
def _membrane_backward_kernel(gy, coef, gx):
    """gy (M,), coef (T,), gx (T, M). Thread -> neuron m (grid-stride): reads gy[m] once and
    writes column m of gx; at each t consecutive threads write consecutive gx[t, m]."""
    T, M = gx.shape
    for m in range(cuda.grid(1), M, cuda.gridsize(1)):
        g = gy[m]
        for t in range(T):
            gx[t, m] = coef[t] * g


def membrane_forward(x, decay):
    """x (T, M) -> y (M,) = sum_t decay^(T-1-t) x_t."""
    host, x = launch.receive(x)
    x2 = launch.time_major(x)
    T, M = x2.shape
    y = launch.empty(x.shape[1:], x.dtype)
    _membrane_forward_kernel[launch.grid_1d(M)](x2, _membrane_coefficients(T, decay, x.dtype),
                                                launch.flat(y), x.dtype.type(0.0))
    return launch.like_input(host, y)


def membrane_backward(gy, T, decay):
    """gy (M,) -> gx (T, M) = decay^(T-1-t) gy."""
    host, gy = launch.receive(gy)
    M = gy.size
    gx = launch.empty((T, M), gy.dtype)
    _membrane_backward_kernel[launch.grid_1d(M)](launch.flat(gy),
                                                 _membrane_coefficients(T, decay, gy.dtype), gx)
    return launch.like_input(host, gx)
