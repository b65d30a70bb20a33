"""Differentiable operations (the layer between the autograd engine and the modules)."""
from .tensor_ops import (abs, add, clip, concat, detach, div, exp, gather, getitem, leaky_relu,
                         log, matmul, maximum, mean, mul, neg, permute, pow, reshape, sigmoid,
                         sub, sum, tanh, transpose, unbroadcast)
from .linear import linear, update_linear_outputs
from .linear_step import linear_tdbn_lif_step_eval
from .conv import conv2d, conv_transpose2d
from .batchnorm import batch_norm, td_batch_norm
from .tdbn_lif import td_batch_norm_lif, td_batch_norm_lif_membrane
from .decoder_block import conv_transpose2d_tdbn_lif_eval, conv_transpose2d_tdbn_lif_membrane_eval
from .lif import (LIFParams, current_spike_mode, lif, lif_step, lif_unrolled, smooth_spike,
                  spike_mode)
from .temporal import membrane_output, psp
from .losses import bernoulli_kld_loss, mse_loss, psp_mmd_loss
from .gaussian import gaussian_kl_loss, reparameterize
from .mmd import linear_mmd, pairwise_sq_distances, rbf_bandwidth, rbf_kernels, rbf_mmd
