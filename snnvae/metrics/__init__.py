"""The papers' evaluation metrics: reconstruction MSE, the autoencoder Frechet distance (AE-FD),
firing rates, and spike-operation counts with an energy estimate.

Import the submodules directly (``snnvae.metrics.frechet``, ``snnvae.metrics.aefd``,
``snnvae.metrics.operations``).
"""
