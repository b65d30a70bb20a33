"""Pictures people look at: image grids and learning curves (matplotlib, Agg backend)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def image_grid(images, ncol=8, pad=1):
    """(n, C, H, W) in [-1, 1] -> one (rows*(H+pad), ncol*(W+pad)[, 3]) array in [0, 1]."""
    images = np.clip((np.asarray(images) + 1) / 2, 0, 1)
    n, c, h, w = images.shape
    rows = int(np.ceil(n / ncol))
    grid = np.ones((rows * (h + pad) + pad, ncol * (w + pad) + pad, c))
    for i in range(n):
        r, k = divmod(i, ncol)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h,
             pad + k * (w + pad): pad + k * (w + pad) + w] = images[i].transpose(1, 2, 0)
    return grid[..., 0] if c == 1 else grid


def save_image_grid(images, path, ncol=8, title=None):
    grid = image_grid(images, ncol)
    fig, ax = plt.subplots(figsize=(ncol * 0.6 + 0.4, grid.shape[0] / grid.shape[1] * ncol * 0.6 + 0.6))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def save_reconstructions(inputs, reconstructions, path, n=16, title=None):
    """Inputs on odd rows, their reconstructions right below them."""
    n = min(n, len(inputs))
    ncol = 8
    rows = []
    for start in range(0, n, ncol):
        rows += [inputs[start:start + ncol], reconstructions[start:start + ncol]]
    return save_image_grid(np.concatenate(rows), path, ncol,
                           title or "inputs (odd rows) and reconstructions (even rows)")


def save_curves(history, keys, path, title="learning curves", xlabel="epoch"):
    """history: list of dicts; plots each key against the row index + 1."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key in keys:
        values = [row[key] for row in history if key in row and row[key] is not None]
        if values:
            ax.plot(range(1, len(values) + 1), values, marker="o", label=key)
    ax.set_xlabel(xlabel)
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
