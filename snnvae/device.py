"""Where an array lives: the host (a NumPy array) or the GPU (a ``DeviceArray``).

A model moved to the GPU (``Module.to_device("cuda")``) keeps its parameters, buffers and every
tensor of a training step in ``snnvae.kernels.cuda.array.DeviceArray``s: NumPy-compatible
arrays whose operations (``a * 2``, ``np.exp(a)``, ``a.sum(0)``, ``np.concatenate``, ...) run as
numba.cuda kernels and leave their results on the device. The library code is written once, in
NumPy, for both: an array created inside an op takes the place of its input through NumPy's
``like=`` argument (``np.zeros(shape, dtype, like=x)``).

Nothing here imports numba.cuda unless an array is moved to the GPU, so CPU users never pay for
it; ``is_device`` only looks whether the device array module has been loaded.

    DEVICES        the names a model or tensor can be moved to: "cpu" and "cuda"
    is_device(a)   True for a DeviceArray
    device_of(a)   "cuda" or "cpu"
    to_host(a)     a NumPy array (a copy from the GPU; host arrays and scalars unchanged)
    to_device(a)   a DeviceArray (a copy to the GPU; raises CudaUnavailableError without one)
    move(a, name)  to_host or to_device by name
    place_like(a, like)  ``a`` as an array where ``like`` lives
    contiguous(a)  ``np.ascontiguousarray`` for both (NumPy does not dispatch that function to
                   a DeviceArray, which is always contiguous)
"""
from __future__ import annotations

import sys

import numpy as np

DEVICES = ("cpu", "cuda")
_ARRAY_MODULE = "snnvae.kernels.cuda.array"


def is_device(a) -> bool:
    """True when ``a`` is a DeviceArray (an array in GPU memory)."""
    module = sys.modules.get(_ARRAY_MODULE)
    return module is not None and isinstance(a, module.DeviceArray)


def device_of(a) -> str:
    return "cuda" if is_device(a) else "cpu"


def to_host(a):
    """``a`` as a host value: a DeviceArray is copied into a NumPy array; anything else is
    returned unchanged."""
    return a.copy_to_host() if is_device(a) else a


def to_device(a, dtype=None):
    """``a`` (array or scalar) as a DeviceArray, copied over once (a DeviceArray passes
    through). Raises CudaUnavailableError, saying what to do, where there is no GPU."""
    from .kernels.cuda import launch
    launch.require_gpu()
    from .kernels.cuda.array import asdevice
    return asdevice(a, dtype=dtype)


def check_device(name: str) -> str:
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; choose one of {DEVICES}")
    return name


def move(a, name: str):
    """``a`` on device ``name`` ("cpu" or "cuda")."""
    return to_device(a) if check_device(name) == "cuda" else np.asarray(to_host(a))


def place_like(a, like):
    """``a`` (an array, a scalar or a list) as an array where ``like`` lives: a DeviceArray
    when ``like`` is one, else a NumPy array (no copy when ``a`` already is one there)."""
    return to_device(a) if is_device(like) else np.asarray(to_host(a))


def contiguous(a):
    """``a`` C-contiguous: a DeviceArray always is; a host array as ``np.ascontiguousarray``."""
    return a if is_device(a) else np.ascontiguousarray(a)
