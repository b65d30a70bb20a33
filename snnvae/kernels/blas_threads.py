"""The number of threads of NumPy's OpenBLAS, changed for a block of code.

Why: the convolutions (``cpu.py``) run as one matrix product per chunk of a few images. With
OpenBLAS's own threads, each small product is split over the cores and joined again, and the
patch-matrix gathers between products run as Numba parallel loops: every chunk hands the
cores back and forth three times. Handing whole chunks to one worker thread per core, each
running single-threaded products and serial gathers, keeps every core busy on its own images
(``cpu._run_chunks``). That needs OpenBLAS at one thread for the duration, which
``single_threaded()`` arranges and undoes.

OpenBLAS offers ``openblas_set_num_threads``; NumPy's wheels bundle it as ``scipy_openblas``
with its symbols renamed (``scipy_openblas_set_num_threads64_``). The library is found among
those the process has loaded (``/proc/self/maps``), NumPy's own first. Where there is none to
find (macOS's Accelerate, MKL, no ``/proc``), ``available()`` is False and the convolutions
keep OpenBLAS's threads and Numba's parallel loops.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import os

_SYMBOLS = (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
            ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
            ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
            ("openblas_set_num_threads", "openblas_get_num_threads"))


def _loaded_openblas_paths():
    """Paths of the loaded shared libraries whose name contains 'openblas', NumPy's first."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split(maxsplit=5)[-1].strip() for line in maps if "openblas" in line}
    except OSError:
        return []
    paths = [p for p in paths if os.path.isfile(p)]
    return sorted(paths, key=lambda p: ("numpy" not in p, p))


@functools.lru_cache(maxsize=1)
def _controls():
    """(set_num_threads, get_num_threads) of NumPy's OpenBLAS, or None."""
    importlib.import_module("numpy")        # loads its BLAS, so that the maps list it
    for path in _loaded_openblas_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _SYMBOLS:
            setter, getter = getattr(lib, set_name, None), getattr(lib, get_name, None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
                return setter, getter
    return None


def available() -> bool:
    """Whether the number of BLAS threads can be changed here."""
    return _controls() is not None


def count() -> int | None:
    """OpenBLAS's current number of threads (None where it cannot be read)."""
    controls = _controls()
    return None if controls is None else int(controls[1]())


@contextlib.contextmanager
def single_threaded():
    """Inside the block NumPy's matrix products run on one thread each (where ``available()``;
    elsewhere nothing changes); the previous number is restored on the way out."""
    controls = _controls()
    if controls is None:
        yield False
        return
    setter, getter = controls
    previous = int(getter())
    setter(1)
    try:
        yield True
    finally:
        setter(previous)
