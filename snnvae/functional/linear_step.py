"""One time step of a spiking linear block in eval mode as one operation, for generation step
by step (FSVAE's prior and, in eval mode, its posterior):

    y   = x_t W^T + b                                                   x_t (N, F_in)
    u_t = tau u_{t-1} (1 - o_{t-1}) + scale gamma (y - running_mean) / sqrt(running_var + eps)
          + beta
    o_t = [u_t > Vth]                                                   (N, F_out)

The values are those of ``linear``, then ``td_batch_norm`` in eval mode, then ``lif_step``
(y up to the order of its additions). The CPU backend makes them in one pass per row and adds
only the weight rows of the active inputs (``kernels.linear_step``). Arrays in, arrays out, no
gradient. The weight comes transposed, W^T (F_in, F_out) contiguous: a caller that steps T
times transposes it once (``nn.SpikingLinear.step`` keeps it in the layer's state).
"""
from __future__ import annotations

from .. import backend
from ..device import contiguous
from ._checks import check_float, check_same_dtype
from .lif import LIFParams


def linear_tdbn_lif_step_eval(x_t, weight_t, bias, gamma, beta, running_mean, running_var,
                              u_prev, o_prev, *, scale, lif_params: LIFParams = LIFParams(),
                              eps=1e-5):
    """x_t (N, F_in), weight_t (F_in, F_out), bias (F_out,) or None, tdBN's gamma, beta and
    running statistics (F_out,), the LIF state u_prev, o_prev (N, F_out) -> (o_t, u_t), each
    (N, F_out)."""
    op = "linear_tdbn_lif_step_eval"
    check_float(f"{op} input", x_t)
    check_same_dtype(op, x_t=x_t, weight_t=weight_t, bias=bias, gamma=gamma, beta=beta,
                     u_prev=u_prev, o_prev=o_prev)
    F_out = weight_t.shape[-1]
    shapes = dict(bias=None if bias is None else bias.shape, gamma=gamma.shape, beta=beta.shape,
                  running_mean=running_mean.shape, running_var=running_var.shape)
    if (x_t.ndim != 2 or weight_t.ndim != 2 or weight_t.shape[0] != x_t.shape[1]
            or any(s not in (None, (F_out,)) for s in shapes.values())
            or u_prev.shape != (x_t.shape[0], F_out) or o_prev.shape != u_prev.shape):
        raise ValueError(f"{op}: x_t {x_t.shape}, weight_t {weight_t.shape}, u_prev "
                         f"{u_prev.shape}, o_prev {o_prev.shape}, {shapes} do not fit: expected "
                         f"x_t (N, F_in), weight_t (F_in, F_out), the state (N, F_out) and "
                         f"the per-feature values (F_out,)")
    return backend.kernels().linear_tdbn_lif_step_eval(
        contiguous(x_t), weight_t, bias, gamma, beta, scale, running_mean, running_var, eps,
        lif_params.vth, lif_params.tau, contiguous(u_prev), contiguous(o_prev))
