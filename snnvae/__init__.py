"""snnvae: fully spiking variational autoencoders from scratch in NumPy and Numba.

Layers of the package, bottom to top (each calls only layers below it):
    kernels/     array-in, array-out kernels (NumPy reference, Numba CPU)
    backend      picks the kernel set
    autograd     Tensor, Function, backward(), no_grad
    functional/  differentiable ops (tensor ops, linear, conv, tdBN, LIF, PSP, losses)
    nn/          Module, Parameter, layers, spiking blocks, initialisation
    optim        SGD, Adam, AdamW
    gradcheck    finite-difference checks used by lessons and tests
    latent/      FSVAE's Bernoulli posterior and prior
    models/      FSVAE and its configuration
    data, resize, download, train, checkpoint, viz: data, training runs and pictures
"""
import os

# Numba's parallel kernels run on an OpenMP thread pool whose default "active" wait makes idle
# threads spin between kernels. On a small machine (2 cores) that also runs BLAS threads, the
# spinning steals the cores: training steps measured 3-30x slower. Passive waiting avoids it.
# setdefault keeps a value the user chose; it must be set before the pool starts.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The same holds for OpenBLAS, behind NumPy's matrix products: its threads spin for 2^28 cycles
# (about 0.1 s) after each product, so the Numba kernels that follow share the cores with them.
# 2^4 cycles lets them sleep at once: FSVAE training steps then ran 1.12-1.15x as fast, sampling
# 1.03-1.42x (bench/README.md). OpenBLAS reads the variable when NumPy loads it, so it takes
# effect where snnvae is imported before NumPy (the examples and benchmarks do) or where it is
# set in the shell.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from .autograd import Tensor, Function, no_grad, enable_grad, as_tensor  # noqa: E402
from . import functional, functional as F, nn, optim, backend, gradcheck  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Tensor", "Function", "no_grad", "enable_grad", "as_tensor", "functional", "F", "nn",
           "optim", "backend", "gradcheck"]
