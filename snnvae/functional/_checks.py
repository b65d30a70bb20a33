"""Helpers shared by the functional ops: input validation with clear messages instead of NumPy
tracebacks, and the (T, M) view that neuron kernels take."""
from __future__ import annotations

import numpy as np

from ..device import contiguous

FLOAT_DTYPES = (np.float32, np.float64)


def check_float(name, array):
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {array.dtype}; "
                        f"convert it with .astype(np.float32)")


def check_same_dtype(op, **arrays):
    dtypes = {k: v.dtype for k, v in arrays.items() if v is not None}
    if len(set(dtypes.values())) > 1:
        listing = ", ".join(f"{k}: {d}" for k, d in dtypes.items())
        raise TypeError(f"{op}: inputs must share one dtype ({listing}); cast them to one, "
                        f"e.g. model.to(np.float64) for gradient checks")


def check_ndim(op, name, array, allowed, layout):
    if array.ndim not in allowed:
        raise ValueError(f"{op}: {name} must have {' or '.join(map(str, allowed))} axes "
                         f"({layout}), got shape {array.shape}")


def as_time_major(x):
    """(T, ...) -> contiguous (T, M) view, M = every other axis flattened."""
    return contiguous(x).reshape(x.shape[0], -1)
