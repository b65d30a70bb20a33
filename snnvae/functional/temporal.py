"""Read-outs over time: the PSP filter and the membrane-potential output layer.

PSP (first-order synaptic filter, tau_s = 2), on x (T, ...):
    syn_t = syn_{t-1} + (x_t - syn_{t-1}) / tau_s,   syn_{-1} = 0

Membrane output (an integrate-only neuron that never fires), x (T, ...) -> (...):
    y = sum_t decay^(T-1-t) x_t,   decay = 0.8
"""
from __future__ import annotations

from .. import backend
from ..autograd import Function, as_tensor
from ..device import contiguous
from ._checks import as_time_major, check_float


class PSP(Function):
    @staticmethod
    def forward(ctx, x, tau_s):
        ctx.save_for_backward(tau_s)
        return backend.kernels().psp_forward(as_time_major(x), tau_s).reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        (tau_s,) = ctx.saved
        return backend.kernels().psp_backward(as_time_major(g), tau_s).reshape(g.shape), None


class MembraneOutput(Function):
    @staticmethod
    def forward(ctx, x, decay):
        ctx.save_for_backward(x.shape, decay)
        return backend.kernels().membrane_forward(as_time_major(x), decay).reshape(x.shape[1:])

    @staticmethod
    def backward(ctx, g):
        shape, decay = ctx.saved
        gx = backend.kernels().membrane_backward(contiguous(g).reshape(-1), shape[0], decay)
        return gx.reshape(shape), None


def psp(x, tau_s=2.0):
    """PSP-filtered x, same shape (time first)."""
    x = as_tensor(x)
    check_float("psp input", x.data)
    return PSP.apply(x, float(tau_s))


def membrane_output(x, decay=0.8):
    """x (T, ...) -> (...): the decayed sum over time of the last layer's currents."""
    x = as_tensor(x)
    check_float("membrane_output input", x.data)
    if x.ndim < 2:
        raise ValueError(f"membrane_output: input must be time first (T, ...), got {x.shape}")
    return MembraneOutput.apply(x, float(decay))
