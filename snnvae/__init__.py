"""snnvae: fully spiking variational autoencoders from scratch in NumPy and Numba.

Layers of the package, bottom to top (each calls only the one below):
    kernels/     array-in, array-out kernels (NumPy reference, Numba CPU)
    backend      picks the kernel set
    autograd     Tensor, Function, backward(), no_grad
    functional/  differentiable ops (tensor ops, linear, conv, tdBN, LIF, PSP, losses)
    nn/          Module, Parameter, layers, spiking blocks, initialisation
    optim        SGD, Adam, AdamW
    gradcheck    finite-difference checks used by lessons and tests
"""
from .autograd import Tensor, Function, no_grad, enable_grad, as_tensor
from . import functional, functional as F, nn, optim, backend, gradcheck

__version__ = "0.1.0"
__all__ = ["Tensor", "Function", "no_grad", "enable_grad", "as_tensor", "functional", "F", "nn",
           "optim", "backend", "gradcheck"]
