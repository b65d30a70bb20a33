"""Array-in, array-out kernels. ``numpy_ref`` is the readable oracle; ``cpu`` the Numba twin."""
