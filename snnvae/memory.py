"""Keep freed memory inside the process (glibc malloc tuning) for training loops.

Why: a training step allocates and frees the same large arrays (activations, gradients,
im2col buffers) every step. glibc serves big requests (>= 128 KiB by default, a threshold
that grows adaptively) with fresh ``mmap`` pages and gives them back to the kernel on
``free``; small-heap tops above the trim threshold are also returned. Each new step then
touches brand-new pages, and every page costs a kernel page fault that zero-fills it. On an
ordinary laptop this is a few percent of a step; on some virtual machines, which hand freed
memory back to the host, re-touching it costs ~2 ms per MB, and an FSVAE step at batch 250
(3.5 GB of temporaries at the time) took 11.6 s instead of 7.7 s.

``retain_freed_memory()`` asks glibc to serve every request from its heap (``M_MMAP_MAX = 0``)
and not to trim the heap until ~2 GiB of its top are free (``M_TRIM_THRESHOLD``), so memory
freed in one step is reused by the next without page faults. The costs: the resident size no
longer shrinks between steps, and the peak grows somewhat, because a heap that returns nothing
fragments (FSVAE at batch 250, measured before spikes were kept as bytes for backward:
3.48 -> 3.95 GB, while 17.1 -> 26.5 images/s on the project's virtual machine; see
bench/README.md).

It only affects allocations made after the call, is a no-op (returning False) where the C
library is not glibc (macOS, Windows, musl), and is opt-in: ``snnvae.train`` and the
benchmarks call it, a library import never does.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 2 ** 31 - 1  # the largest int mallopt takes: ~2 GiB of free heap top


def _glibc():
    """The process's glibc as a ctypes library, or None where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
    except (OSError, AttributeError):
        return None
    return libc


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the kernel.

    Returns True when the setting is in force (glibc; calling again is harmless), False where
    it is not available, or when the environment variable ``SNNVAE_RELEASE_MEMORY=1`` asks to
    keep the C library's defaults (e.g. to watch a run's resident size fall between steps).
    """
    if os.environ.get("SNNVAE_RELEASE_MEMORY", "") not in ("", "0"):
        return False
    libc = _glibc()
    if libc is None:
        return False
    return (libc.mallopt(_M_MMAP_MAX, 0) == 1
            and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1)
