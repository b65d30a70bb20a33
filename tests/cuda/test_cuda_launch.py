"""The launch helpers: host/device round trips and grid sizes; the kernel set's signatures."""
from __future__ import annotations

import numpy as np

from snnvae.kernels.cuda import gemm, launch
from snnvae.kernels.cuda.array import DeviceArray


def test_results_come_back_where_the_inputs_came_from():
    host = np.arange(6.0)
    dev = launch.to_device(host)
    assert launch.is_device_array(dev) and launch.to_device(dev) is dev
    assert launch.on_host(host, None) and not launch.on_host(host, dev)
    back = launch.like_input(True, dev)
    assert isinstance(back, np.ndarray) and np.array_equal(back, host)
    kept, nothing = launch.like_input(False, dev, None)
    assert isinstance(kept, DeviceArray) and kept.device is dev and nothing is None


def test_grids_cover_the_work():
    blocks, threads = launch.grid_1d(10_000)
    assert blocks >= 1 and threads >= 1
    grid, block = gemm.tile_grid(9, 5, batch=2, max_blocks=10**6)
    assert block == (launch.TILE, launch.TILE)
    assert grid[0] * launch.TILE >= 5 and grid[1] * launch.TILE >= 9 and grid[2] == 2
    grid, _ = gemm.tile_grid(1000, 1000, batch=7, max_blocks=4)
    assert grid[0] * grid[1] * grid[2] <= 4


def test_the_backend_offers_every_kernel_with_the_reference_signature():
    import inspect

    from snnvae import backend
    from snnvae.kernels import numpy_ref
    module = backend.kernels("cuda")
    for name in backend.KERNEL_NAMES:
        assert hasattr(module, name), f"snnvae.kernels.cuda lacks {name}"
        ours = inspect.signature(getattr(module, name)).parameters
        reference = inspect.signature(getattr(numpy_ref, name)).parameters
        assert list(ours) == list(reference), f"{name}: {list(ours)} vs {list(reference)}"
