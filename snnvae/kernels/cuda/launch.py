"""Where CUDA kernels run and how they are launched: the one place that knows about devices.

Every kernel in this package is written as a *grid-stride loop*: thread ``i`` of a launch with
``n_threads`` threads in all handles items ``i, i + n_threads, i + 2 n_threads, ...``. The
result never depends on the launch size, so the same kernel runs

- on a GPU with enough blocks to fill it (``grid_1d``: up to ``MAX_BLOCKS`` blocks of
  ``THREADS_PER_BLOCK`` threads), and
- in the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, used by the tests on machines without a
  GPU), where every simulated thread is a Python thread, with one small block.

Arrays in, arrays out: a kernel wrapper accepts NumPy arrays or device arrays (the library's
``DeviceArray``, or a raw numba device array). ``to_device`` moves a NumPy array over and
unwraps a DeviceArray to the numba array the kernels index (no copy); ``like_input`` brings a
result back to the host when the caller gave host arrays, and otherwise hands it back as a
DeviceArray. So the wrappers keep the signatures of the NumPy reference kernels, while a caller
whose tensors live on the device (``Module.to_device("cuda")``) never pays a copy.
"""
from __future__ import annotations

import numpy as np
from numba import config, cuda

SIMULATOR = bool(config.ENABLE_CUDASIM)

THREADS_PER_BLOCK = 32 if SIMULATOR else 256
MAX_BLOCKS = 1 if SIMULATOR else 4096
# Side of the square shared-memory tiles of the matrix products. Small in the simulator so
# that the tiny test shapes still span several tiles (the edge handling gets exercised).
TILE = 4 if SIMULATOR else 16


class CudaUnavailableError(RuntimeError):
    """Raised when a CUDA kernel is asked for on a machine where numba finds no GPU."""


def gpu_found() -> bool:
    """True where CUDA kernels can run: a GPU numba can use, or the simulator."""
    return SIMULATOR or cuda.is_available()


def require_gpu() -> None:
    """Raise a CudaUnavailableError that says what to do when no GPU (or simulator) is there."""
    if gpu_found():
        return
    raise CudaUnavailableError(
        "no CUDA GPU was found. Check with `python -c \"from numba import cuda; cuda.detect()\"`; "
        "install the GPU libraries with `pip install -e '.[cuda]'` (numba-cuda with the CUDA 12 "
        "runtime) and an NVIDIA driver. Without a GPU, train on the CPU (--device cpu), or run "
        "the kernels in the CUDA simulator by setting NUMBA_ENABLE_CUDASIM=1 before Python "
        "starts (very slow: for tests on tiny shapes only).")


def _is_wrapped(a) -> bool:
    from .array import DeviceArray
    return isinstance(a, DeviceArray)


def is_device_array(a) -> bool:
    """True for a DeviceArray, a numba device array (real or simulated) and any
    __cuda_array_interface__ one."""
    if _is_wrapped(a):
        return True
    if SIMULATOR:
        return isinstance(a, cuda.devicearray.FakeCUDAArray)
    return cuda.is_cuda_array(a)


def to_device(a):
    """The numba device array a kernel indexes: a DeviceArray's own buffer, a numba device array
    itself, or a copy of a host array."""
    if a is None:
        return a
    if _is_wrapped(a):
        return a.device
    if is_device_array(a):
        return a
    return cuda.to_device(np.ascontiguousarray(a))


def on_host(*arrays) -> bool:
    """True when the caller passed host (NumPy) arrays: results must go back to the host."""
    return not any(is_device_array(a) for a in arrays if a is not None)


def receive(x, *others):
    """What every kernel wrapper does first: check for a GPU, note whether the caller works on
    the host (then its results go back there), and move the arrays over, the others in x's
    dtype (``device_array_of``; None stays None).  ``host, x, w, b = receive(x, w, b)``."""
    require_gpu()
    host = on_host(x, *others)
    x = to_device(x)
    return (host, x) + tuple(None if a is None else device_array_of(a, x.dtype) for a in others)


def device_array_of(a, dtype):
    """``a`` on the device with the given dtype: a host array is cast (as the CPU kernels cast
    their secondary inputs) and copied over; a device array must already have that dtype,
    since casting it would need a kernel launch of its own."""
    if is_device_array(a):
        if a.dtype != dtype:
            raise TypeError(f"device array of dtype {a.dtype} where {np.dtype(dtype)} is needed; "
                            f"cast it before the call")
        return to_device(a)
    return to_device(np.asarray(a, dtype=dtype))


def typed(dtype, *values):
    """Python scalars cast to ``dtype``: a bare Python float inside a kernel is a float64 and
    would promote float32 arithmetic to float64."""
    return tuple(np.dtype(dtype).type(v) for v in values)


def flat(a):
    """The 1-D view of a contiguous device array (what the elementwise kernels walk)."""
    return a.reshape(a.size)


def time_major(a):
    """The (T, M) view of a contiguous device array (T, ...): M neurons per time step."""
    T = a.shape[0]
    return a.reshape(T, a.size // T if T else 0)


def like_input(host: bool, *results):
    """Copy results to the host when the inputs came from there; otherwise hand them back as
    DeviceArrays, which stay on the device. Returns one value for one result, a tuple for
    several (None stays None)."""
    if host:
        results = tuple(None if r is None else r.copy_to_host() for r in results)
    else:
        from .array import DeviceArray
        results = tuple(r if r is None or isinstance(r, DeviceArray) else DeviceArray(r)
                        for r in results)
    return results[0] if len(results) == 1 else results


def empty(shape, dtype):
    return cuda.device_array(shape, dtype=dtype)


def grid_1d(n: int):
    """(blocks, threads per block) for a grid-stride loop over ``n`` items."""
    blocks = max(1, min(MAX_BLOCKS, (int(n) + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK))
    return blocks, THREADS_PER_BLOCK


def device_memory_used_mb():
    """Memory in use on the current GPU (all processes), in MB; None in the simulator."""
    if SIMULATOR or not cuda.is_available():
        return None
    free, total = cuda.current_context().get_memory_info()
    return (total - free) / 2**20
