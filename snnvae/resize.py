"""Bilinear resizing with the exact semantics of PIL's ``Image.resize(size, BILINEAR)``, which is
what torchvision's ``Resize`` runs on the MNIST images that the papers train on.

Per axis (in -> out pixels, scale = in / out):
    centre of output pixel i in input coordinates: c_i = (i + 1/2) * scale   (half-pixel centres)
    support = max(scale, 1)  (the triangle widens when shrinking: a box-like antialias)
    taps j from floor(c_i - support + 1/2) to floor(c_i + support + 1/2), clamped to the image
    weights w_ij = max(0, 1 - |(j - c_i + 1/2) / max(scale, 1)|), normalised to sum 1
Edge clamping happens through the truncated tap range. For 8-bit images PIL uses fixed point:
each weight becomes round(w * 2^22) (away from zero), every pass accumulates integer products
starting from 2^21 (rounding), shifts right by 22 and clips to 0..255. The horizontal pass runs
first, then the vertical one, each rounding to uint8.
"""
from __future__ import annotations

import numpy as np

PRECISION_BITS = 22


def bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float64 weights of PIL's bilinear filter (rows sum to 1)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        taps = np.arange(lo, hi)
        w = np.maximum(0.0, 1.0 - np.abs((taps - center + 0.5) / filterscale))
        if w.sum() != 0:
            w = w / w.sum()
        weights[i, lo:hi] = w
    return weights


def fixed_point(weights: np.ndarray) -> np.ndarray:
    """PIL's 8-bit coefficients: round half away from zero of w * 2^22."""
    scaled = weights * (1 << PRECISION_BITS)
    return np.where(scaled < 0, np.ceil(scaled - 0.5), np.floor(scaled + 0.5))


def _pass(images, coef):
    """Apply integer coefficients along the last axis with PIL's rounding and clipping.

    Sums stay below 2^53, so float64 arithmetic is exact and BLAS can do the work.
    """
    acc = images.astype(np.float64) @ coef.T + (1 << (PRECISION_BITS - 1))
    return np.clip(np.floor(acc / (1 << PRECISION_BITS)), 0, 255).astype(np.uint8)


def resize_bilinear_u8(images: np.ndarray, size) -> np.ndarray:
    """uint8 (..., H, W) -> uint8 (..., size_h, size_w), as PIL resize(BILINEAR) on mode 'L'."""
    if images.dtype != np.uint8:
        raise TypeError(f"resize_bilinear_u8 expects uint8 images, got {images.dtype}")
    out_h, out_w = (size, size) if np.isscalar(size) else size
    in_h, in_w = images.shape[-2:]
    horizontal = _pass(images, fixed_point(bilinear_weights(in_w, out_w)))
    vertical = _pass(np.swapaxes(horizontal, -1, -2), fixed_point(bilinear_weights(in_h, out_h)))
    return np.ascontiguousarray(np.swapaxes(vertical, -1, -2))
