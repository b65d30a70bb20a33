"""Reconstruction error on a test split, and the firing rate of every spiking layer meanwhile.

    MSE = (1 / (n P)) sum_i |reconstruction_i - image_i|^2      (P pixels per image)

over all n images (the papers' measure: images in [-1, 1], 32 x 32, the whole test split), in
eval mode. A layer's firing rate is the fraction of its neurons x time steps that spike,
averaged over the images (every batch weighted by its size).
"""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from ..autograd import no_grad
from ..nn import monitor_firing_rates


def reconstruction_metrics(model, images, rng: np.random.Generator, batch_size=250,
                           progress=False) -> dict:
    """Eval-mode reconstruction of ``images`` (n, C, S, S) with ``model.reconstruct(x, rng)``.

    Returns {mse, images, firing_rates: layer -> rate, mean_firing_rate (mean over layers,
    None for a model without spiking layers)}. The rates are those of the layers a
    reconstruction runs: FSVAE's prior, which only the loss needs, is not among them (its rates
    are in the training run's metrics.csv, from the full eval forward). The model's training
    flag is restored.
    """
    images = np.asarray(images)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"reconstruction_metrics needs images (n, C, H, W) with n >= 1, got "
                         f"shape {images.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    was_training = model.training
    model.eval()
    squared, weights = 0.0, {}
    try:
        with no_grad(), monitor_firing_rates(model) as rates, \
                tqdm(total=len(images), desc="reconstructing", unit="img", disable=not progress,
                     leave=False) as bar:
            for start in range(0, len(images), batch_size):
                batch = images[start:start + batch_size]
                before = {k: len(v) for k, v in rates.items()}
                recon = np.asarray(model.reconstruct(batch, rng), dtype=np.float64)
                if recon.shape != batch.shape:
                    raise ValueError(f"{type(model).__name__}.reconstruct returned shape "
                                     f"{recon.shape} for a batch of shape {batch.shape}")
                squared += float(np.sum((recon - batch.astype(np.float64)) ** 2))
                for name, values in rates.items():
                    weights.setdefault(name, []).extend(
                        [len(batch)] * (len(values) - before.get(name, 0)))
                bar.update(len(batch))
    finally:
        model.train(was_training)
    firing = {name: float(np.average(values, weights=weights[name]))
              for name, values in rates.items() if values}
    return {"mse": squared / images.size, "images": int(len(images)), "firing_rates": firing,
            "mean_firing_rate": float(np.mean(list(firing.values()))) if firing else None}
