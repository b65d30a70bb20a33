"""Eval-mode blocks on the device, composed of other ops' kernels, whose intermediates never
leave the device: a spiking decoder block (the transposed convolution of ``conv``, then the
fused tdBN -> LIF of ``batchnorm``), the same block summed over time by the membrane output's
kernel (``neuron``), and one time step of a spiking linear block (a GEMM, tdBN, the LIF step).
The thread mappings are theirs."""
from __future__ import annotations

from ..numpy_ref import compose_block_eval, compose_linear_step_eval
from . import launch
from .batchnorm import tdbn_forward_eval, tdbn_lif_forward_eval
from .conv import conv_transpose2d_forward, linear_transposed_forward
from .neuron import lif_step, membrane_forward


def conv_transpose2d_tdbn_lif_forward_eval(x, w, b, stride, padding, output_padding, gamma, beta,
                                           scale, running_mean, running_var, eps, vth, tau, aa,
                                           center, smooth):
    """x (T, N, C_in, H, W) -> spikes (T, N, C_out, Ho, Wo), as ``numpy_ref``'s."""
    host, x = launch.receive(x)
    host = host and launch.on_host(w, b, gamma, beta, running_mean, running_var)
    o = compose_block_eval(conv_transpose2d_forward, tdbn_lif_forward_eval, x, w, b, stride,
                           padding, output_padding, gamma, beta, scale, running_mean,
                           running_var, eps, vth, tau, aa, center, smooth)
    return launch.like_input(host, o)


def conv_transpose2d_tdbn_lif_membrane_eval(x, w, b, stride, padding, output_padding, gamma,
                                            beta, scale, running_mean, running_var, eps, vth,
                                            tau, aa, center, smooth, decay):
    """x (T, N, C_in, H, W) -> sum_t decay^(T-1-t) o_t (N, C_out, Ho, Wo), as ``numpy_ref``'s."""
    host, x = launch.receive(x)
    host = host and launch.on_host(w, b, gamma, beta, running_mean, running_var)
    o = compose_block_eval(conv_transpose2d_forward, tdbn_lif_forward_eval, x, w, b, stride,
                           padding, output_padding, gamma, beta, scale, running_mean,
                           running_var, eps, vth, tau, aa, center, smooth)
    return launch.like_input(host, membrane_forward(o, decay))


def linear_tdbn_lif_step_eval(x, wt, b, gamma, beta, scale, running_mean, running_var, eps, vth,
                              tau, u_prev, o_prev):
    """x (N, F_in), wt (F_in, F_out) -> (o, u) (N, F_out), as ``numpy_ref``'s."""
    host, x, wt, b, u_prev, o_prev = launch.receive(x, wt, b, u_prev, o_prev)
    host = host and launch.on_host(gamma, beta, running_mean, running_var)
    o, u = compose_linear_step_eval(linear_transposed_forward, tdbn_forward_eval, lif_step, x, wt,
                                    b, gamma, beta, scale, running_mean, running_var, eps, vth,
                                    tau, u_prev, o_prev)
    return launch.like_input(host, o, u)
