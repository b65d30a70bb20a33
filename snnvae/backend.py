"""Which kernel set runs the ops: the NumPy reference, the Numba CPU kernels or numba.cuda.

Every kernel module exposes the same names with the same signatures (see ``KERNEL_NAMES``);
the functional layer asks ``kernels()`` for the active one and never imports a kernel module
itself. The choice is process-wide, like a device, and can be changed for a block of code:

    with snnvae.backend.use("numpy"):
        y = F.conv2d(x, w)          # runs the readable reference kernel
"""
from __future__ import annotations

import contextlib
import importlib

BACKENDS = ("numpy", "cpu", "cuda")
KERNEL_NAMES = (
    "linear_forward", "linear_backward", "linear_delta_into", "linear_tdbn_lif_step_eval",
    "conv2d_forward", "conv2d_backward",
    "conv_transpose2d_forward", "conv_transpose2d_backward",
    "tdbn_forward_train", "tdbn_forward_eval", "tdbn_backward_train", "tdbn_backward_eval",
    "lif_forward", "lif_backward", "lif_step",
    "tdbn_lif_forward_train", "tdbn_lif_forward_eval", "tdbn_lif_backward",
    "tdbn_lif_membrane_forward_train", "tdbn_lif_membrane_backward",
    "conv_transpose2d_tdbn_lif_forward_eval", "conv_transpose2d_tdbn_lif_membrane_eval",
    "psp_forward", "psp_backward",
    "membrane_forward", "membrane_backward",
    "pack_spikes", "adam_update",
)
_MODULES = {"numpy": "snnvae.kernels.numpy_ref", "cpu": "snnvae.kernels.cpu",
            "cuda": "snnvae.kernels.cuda"}
_active = "cpu"


def kernels(name: str | None = None):
    """The kernel module of backend ``name`` (default: the active one)."""
    name = _active if name is None else name
    if name not in _MODULES:
        raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")
    return importlib.import_module(_MODULES[name])


def current() -> str:
    return _active


def available() -> tuple[str, ...]:
    """The backends that can run here: 'cuda' only where numba finds a GPU (or the simulator)."""
    from .kernels.cuda import launch
    return tuple(b for b in BACKENDS if b != "cuda" or launch.gpu_found())


def set_backend(name: str) -> None:
    """Make ``name`` ('numpy', 'cpu' or 'cuda') the backend of every following op.

    'cuda' raises ``CudaUnavailableError`` at once, with what to do, where there is no GPU."""
    global _active
    if name not in _MODULES:
        raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")
    if name == "cuda":
        from .kernels.cuda import launch
        launch.require_gpu()
    _active = name


@contextlib.contextmanager
def use(name: str):
    """Run a block of code on backend ``name``, then restore the previous one."""
    previous = _active
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)
