"""The multi-step leaky integrate-and-fire neuron and its spike function.

For an input current x of shape (T, ...) (time first), each neuron runs

    u_t = tau * u_{t-1} * (1 - o_{t-1}) + x_t        u_0 = o_0 = 0   (leak, then hard reset)
    o_t = spike(u_t) = 1 if u_t > Vth else 0

with Vth = 0.2 and tau = 0.25 (a leak multiplier) as in FSVAE. A spike has no useful
derivative, so backward uses the rectangular surrogate

    spike'(u) = 1[|u - c| < aa] / (2 aa),    aa = 0.5,

centred at c = 0 (the official code's quirk, our default) or at c = Vth. The reset term
(1 - o_{t-1}) carries gradient (BPTT through the reset) unless ``detach_reset=True``.

Spike modes (``spike_mode``) decide what ``spike`` means for the whole network:

* ``"spike"``: Heaviside forward, the fused hand-written BPTT kernel backward (training).
* ``"smooth"``: the stand-in h(u) = clip((u - c) / (2 aa) + 1/2, 0, 1) forward and backward.
  Its exact derivative is the surrogate, so central differences check BPTT end to end.
* ``"straight_through"``: the neuron unrolled step by step in autograd primitives, with a spike
  whose forward is Heaviside and whose backward is autograd's derivative of h at u. Nothing
  hand-written is involved, so comparing it with ``"spike"`` checks the fused kernel.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

from .. import backend
from ..autograd import Function, Tensor, as_tensor, enable_grad
from ..device import contiguous
from . import tensor_ops as ops
from ._checks import as_time_major, check_float

SPIKE_MODES = ("spike", "smooth", "straight_through")
_mode = ["spike"]


def current_spike_mode() -> str:
    return _mode[0]


@contextlib.contextmanager
def spike_mode(mode: str):
    """Run a block with every LIF neuron in ``mode`` ('spike', 'smooth', 'straight_through')."""
    if mode not in SPIKE_MODES:
        raise ValueError(f"unknown spike mode {mode!r}; choose one of {SPIKE_MODES}")
    previous = _mode[0]
    _mode[0] = mode
    try:
        yield
    finally:
        _mode[0] = previous


@dataclass(frozen=True)
class LIFParams:
    """Constants of the LIF neuron (FSVAE defaults)."""
    vth: float = 0.2
    tau: float = 0.25
    aa: float = 0.5
    window_center: float = 0.0   # 0.0: official quirk; set to vth to centre the window there
    detach_reset: bool = False


class LIF(Function):
    """Fused multi-step LIF: forward and BPTT each one kernel call over all T steps."""

    @staticmethod
    def forward(ctx, x, p: LIFParams, smooth: bool):
        xt = as_time_major(x)
        o, u = backend.kernels().lif_forward(xt, p.vth, p.tau, p.aa, p.window_center, smooth)
        ctx.save_for_backward(u, o, p, x.shape)
        return o.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        u, o, p, shape = ctx.saved
        gx = backend.kernels().lif_backward(as_time_major(g), u, o, p.tau, p.aa, p.window_center,
                                            p.detach_reset)
        return gx.reshape(shape), None, None


def smooth_spike(u, p: LIFParams = LIFParams()):
    """The stand-in h(u) = clip((u - c) / (2 aa) + 1/2, 0, 1), built from autograd primitives."""
    return ops.clip((u - p.window_center) * (1.0 / (2.0 * p.aa)) + 0.5, 0.0, 1.0)


class StraightThroughSpike(Function):
    """Heaviside forward; backward = autograd's derivative of ``smooth_spike`` at u."""

    @staticmethod
    def forward(ctx, u, p: LIFParams):
        ctx.save_for_backward(u, p)
        return (u > p.vth).astype(u.dtype)

    @staticmethod
    def backward(ctx, g):
        u, p = ctx.saved
        leaf = Tensor(u, requires_grad=True)
        with enable_grad():
            smooth_spike(leaf, p).backward(g)
        return leaf.grad, None


def lif_unrolled(x, p: LIFParams = LIFParams(), spike_fn=None):
    """The LIF recurrence written step by step with autograd primitives (slow, transparent).

    spike_fn(u) -> o; defaults to the straight-through spike. Returns (o, u) stacked over time.
    """
    x = as_tensor(x)
    spike_fn = spike_fn or (lambda u: StraightThroughSpike.apply(u, p))
    u_prev, o_prev = None, None
    outs, mems = [], []
    for t in range(x.shape[0]):
        if u_prev is None:
            u = x[t]
        else:
            keep = 1.0 - (o_prev.detach() if p.detach_reset else o_prev)
            u = u_prev * p.tau * keep + x[t]
        o = spike_fn(u)
        outs.append(o.reshape(1, *o.shape))
        mems.append(u.reshape(1, *u.shape))
        u_prev, o_prev = u, o
    return ops.concat(outs, axis=0), ops.concat(mems, axis=0)


def lif_step(x_t, u_prev, o_prev, vth=0.2, tau=0.25):
    """One time step of a layer of LIF neurons with carried state (arrays, no gradient).

    x_t, u_prev, o_prev: arrays of one shape -> (o_t, u_t). Running a layer step by step with
    this function gives exactly the spikes of ``lif`` over the whole sequence.
    """
    x_t = contiguous(x_t)
    o, u = backend.kernels().lif_step(x_t.reshape(-1), contiguous(u_prev).reshape(-1),
                                      contiguous(o_prev).reshape(-1), vth, tau)
    return o.reshape(x_t.shape), u.reshape(x_t.shape)


def lif(x, vth=0.2, tau=0.25, aa=0.5, window_center=0.0, detach_reset=False, mode=None):
    """Spikes of a layer of LIF neurons driven by x (T, ...): returns o of the same shape.

    mode: None (the active ``spike_mode``), 'spike', 'smooth' or 'straight_through'.
    """
    x = as_tensor(x)
    check_float("lif input", x.data)
    if x.ndim < 2:
        raise ValueError(f"lif: input must be time first, (T, ...) with at least 2 axes; got "
                         f"shape {x.shape}")
    p = LIFParams(vth, tau, aa, window_center, detach_reset)
    mode = current_spike_mode() if mode is None else mode
    if mode == "spike":
        return LIF.apply(x, p, False)
    if mode == "smooth":
        return LIF.apply(x, p, True)
    if mode == "straight_through":
        return lif_unrolled(x, p)[0]
    raise ValueError(f"unknown spike mode {mode!r}; choose one of {SPIKE_MODES}")
