"""Shared fixtures: where the golden vectors live, and time-axis conversion helpers."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# tests/cuda needs the CUDA simulator switched on before numba is first imported, so the main
# run leaves it out and tests/test_cuda.py runs it in a subprocess with the right environment.
collect_ignore = [] if os.environ.get("SNNVAE_CUDA_TESTS") else ["cuda"]


def shared_dir() -> Path | None:
    """$SNNVAE_SHARED, else ../shared beside the project root (where CI puts it)."""
    candidates = [os.environ.get("SNNVAE_SHARED"), ROOT.parent / "shared"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return None


@pytest.fixture
def golden():
    """golden('lif') -> the loaded npz; skips when the folder is absent."""
    def load(name):
        base = shared_dir()
        path = None if base is None else base / "golden" / f"{name}.npz"
        if path is None or not path.exists():
            pytest.skip(f"golden file {name}.npz not found (looked in $SNNVAE_SHARED and "
                        f"{ROOT.parent / 'shared'}/golden); these tests need the official outputs")
        return np.load(path)
    return load


def time_first(a):
    """Official layout (N, C, ..., T) -> ours (T, N, C, ...)."""
    return np.ascontiguousarray(np.moveaxis(a, -1, 0))


def time_last(a):
    return np.ascontiguousarray(np.moveaxis(a, 0, -1))


@pytest.fixture(params=["numpy", "cpu"])
def backend_name(request):
    """Run a test once per kernel backend."""
    import snnvae
    with snnvae.backend.use(request.param):
        yield request.param
