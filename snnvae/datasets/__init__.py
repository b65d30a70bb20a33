"""Data files shipped inside the package (a subset of real MNIST)."""
