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
(``lif_constants``, ``_typed``), because a Python float inside a kernel is a float64 and would
promote float32 arithmetic to float64. The CPU kernels do the same, so the two agree up to
rounding: the GPU compiler fuses a multiply and an add into one FMA (one rounding instead of
two), so a float32 result may differ from the CPU's in the last bit.

The device functions ``spike_output``, ``membrane_potential`` and ``membrane_gradient`` are
shared with the fused tdBN + LIF kernels of ``batchnorm.py``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from . import launch

# --------------------------------------------------------------------------------------------
# Host side helpers
# --------------------------------------------------------------------------------------------


def _typed(dtype, *values):
    return tuple(dtype.type(v) for v in values)


def lif_constants(dtype, vth, tau, aa, center):
    """The LIF's constants in the array's dtype, as the one tuple the kernels take:
    (vth, tau, window width 2 aa, window centre, 1/2, 1, 0, 1 / (2 aa), aa)."""
    t = np.dtype(dtype).type
    width = t(2.0 * aa)
    return (t(vth), t(tau), width, t(center), t(0.5), t(1.0), t(0.0), t(1.0) / width, t(aa))


LIF_ZERO = 6   # position of 0 in that tuple: the state of a neuron before t = 0


def device_array_of(a, dtype):
    """``a`` on the device with the given dtype: a host array is cast (as the CPU kernels cast
    their secondary inputs) and copied over; a device array must already have that dtype,
    since casting it would need a kernel launch of its own."""
    if launch.is_device_array(a):
        if a.dtype != dtype:
            raise TypeError(f"device array of dtype {a.dtype} where {np.dtype(dtype)} is needed; "
                            f"cast it before the call")
        return a
    return launch.to_device(np.asarray(a, dtype=dtype))


def _time_major(a):
    """View a device array (T, ...) as (T, M)."""
    if a.ndim == 2:
        return a
    T = a.shape[0]
    return a.reshape(T, a.size // T if T else 0)


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
        u_prev = zero
        o_prev = zero
        for t in range(T):
            u_t = membrane_potential(u_prev, o_prev, x[t, m], lif)
            o_t = spike_output(u_t, lif, smooth)
            u[t, m] = u_t
            o[t, m] = o_t
            u_prev = u_t
            o_prev = o_t


def lif_forward(x, vth, tau, aa, center, smooth):
    """x (T, M) -> (o, u), both (T, M) in x's dtype."""
    launch.require_gpu()
    host = launch.on_host(x)
    x = launch.to_device(x)
    o, u = launch.empty(x.shape, x.dtype), launch.empty(x.shape, x.dtype)
    x2 = _time_major(x)
    _lif_forward_kernel[launch.grid_1d(x2.shape[1])](
        x2, _time_major(o), _time_major(u), lif_constants(x.dtype, vth, tau, aa, center),
        bool(smooth))
    return launch.like_input(host, o, u)


@cuda.jit
def _lif_step_kernel(x_t, u_prev, o_prev, o, u, lif):
    """One time step, every array (M,). Thread -> neuron m (grid-stride); consecutive threads
    touch consecutive elements of each array: coalesced."""
    for m in range(cuda.grid(1), x_t.shape[0], cuda.gridsize(1)):
        u_t = membrane_potential(u_prev[m], o_prev[m], x_t[m], lif)
        u[m] = u_t
        o[m] = spike_output(u_t, lif, False)


def lif_step(x_t, u_prev, o_prev, vth, tau):
    """x_t, u_prev, o_prev (M,) -> spikes and potentials (o_t, u_t) of one step, x_t's dtype."""
    launch.require_gpu()
    host = launch.on_host(x_t, u_prev, o_prev)
    x_t = launch.to_device(x_t)
    dt = x_t.dtype
    u_prev, o_prev = device_array_of(u_prev, dt), device_array_of(o_prev, dt)
    o, u = launch.empty(x_t.shape, dt), launch.empty(x_t.shape, dt)
    # aa and the centre only matter for the smooth output and the gradient; any value will do
    lif = lif_constants(dt, vth, tau, 0.5, 0.0)
    _lif_step_kernel[launch.grid_1d(x_t.size)](x_t.reshape(x_t.size), u_prev.reshape(x_t.size),
                                               o_prev.reshape(x_t.size), o.reshape(x_t.size),
                                               u.reshape(x_t.size), lif)
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
    launch.require_gpu()
    host = launch.on_host(go, u, o)
    go = launch.to_device(go)
    dt = go.dtype
    u, o = device_array_of(u, dt), device_array_of(o, dt)
    gx = launch.empty(go.shape, dt)
    go2 = _time_major(go)
    # Vth is not needed: the surrogate is centred on `center`
    lif = lif_constants(dt, 0.0, tau, aa, center)
    _lif_backward_kernel[launch.grid_1d(go2.shape[1])](
        go2, _time_major(u), _time_major(o), _time_major(gx), lif, bool(detach_reset))
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


def psp_forward(x, tau_s):
    """x (T, M) -> filtered y (T, M)."""
    launch.require_gpu()
    host = launch.on_host(x)
    x = launch.to_device(x)
    y = launch.empty(x.shape, x.dtype)
    x2 = _time_major(x)
    _psp_forward_kernel[launch.grid_1d(x2.shape[1])](x2, _time_major(y),
                                                     *_typed(x.dtype, tau_s, 0.0))
    return launch.like_input(host, y)


def psp_backward(gy, tau_s):
    """gy (T, M) -> gx (T, M)."""
    launch.require_gpu()
    host = launch.on_host(gy)
    gy = launch.to_device(gy)
    gx = launch.empty(gy.shape, gy.dtype)
    gy2 = _time_major(gy)
    # keep = 1 - 1/tau_s is computed in float64, then cast to the array's dtype (as numpy_ref;
    # the Numba CPU kernel keeps it and the state in float64)
    _psp_backward_kernel[launch.grid_1d(gy2.shape[1])](
        gy2, _time_major(gx), *_typed(gy.dtype, tau_s, 1.0 - 1.0 / tau_s, 0.0))
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
    launch.require_gpu()
    host = launch.on_host(x)
    x = launch.to_device(x)
    x2 = _time_major(x)
    T, M = x2.shape
    y = launch.empty(x.shape[1:], x.dtype)
    _membrane_forward_kernel[launch.grid_1d(M)](x2, _membrane_coefficients(T, decay, x.dtype),
                                                y.reshape(M), x.dtype.type(0.0))
    return launch.like_input(host, y)


def membrane_backward(gy, T, decay):
    """gy (M,) -> gx (T, M) = decay^(T-1-t) gy."""
    launch.require_gpu()
    host = launch.on_host(gy)
    gy = launch.to_device(gy)
    M = gy.size
    gx = launch.empty((T, M), gy.dtype)
    _membrane_backward_kernel[launch.grid_1d(M)](gy.reshape(M),
                                                 _membrane_coefficients(T, decay, gy.dtype), gx)
    return launch.like_input(host, gx)
