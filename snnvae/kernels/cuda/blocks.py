"""A spiking decoder block in eval mode on the device: the transposed convolution (``conv``),
then the fused tdBN -> LIF (``batchnorm``): the kernels of those two ops, whose intermediate y
never leaves the device; and the same block summed over time by the membrane output's kernel
(``neuron``). The thread mappings are theirs."""
from __future__ import annotations

from ..numpy_ref import compose_block_eval
from . import launch
from .batchnorm import tdbn_lif_forward_eval
from .conv import conv_transpose2d_forward
from .neuron import membrane_forward


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
