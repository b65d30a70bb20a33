"""Modules: containers of parameters and the layers that spiking VAEs are built from."""
from .module import Module, Parameter, Sequential
from .layers import (LIF, PSP, BatchNorm, calibrate_running_statistics, Conv2d, ConvTranspose2d, LeakyReLU, Linear,
                     MembraneOutput, Reshape, Tanh, TdBatchNorm)
from .spiking import (SpikingConv2d, SpikingConvTranspose2d, SpikingLinear,
                      monitor_firing_rates, unfused_blocks)
from .ann_layers import BatchNorm2d, conv_bn_lrelu, conv_transpose_bn_lrelu
from . import init
