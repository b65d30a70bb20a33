"""PyTorch-default initialisation, so that results are comparable with the papers' code.

Weights: kaiming-uniform with a = sqrt(5),
    gain = sqrt(2 / (1 + a^2)),  bound = gain * sqrt(3 / fan_in)  (= 1 / sqrt(fan_in) for a = sqrt(5))
Biases: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)).
fan_in = size of weight axis 1 times the kernel area. For a transposed convolution, whose weight
is (C_in, C_out, kh, kw), axis 1 is C_out: PyTorch computes it that way and so do we.
"""
from __future__ import annotations

import math

import numpy as np


def fan_in(shape):
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive


def kaiming_uniform(shape, rng: np.random.Generator, a=math.sqrt(5), dtype=np.float32):
    gain = math.sqrt(2.0 / (1.0 + a * a))
    bound = gain * math.sqrt(3.0 / fan_in(shape))
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def bias_uniform(size, weight_shape, rng: np.random.Generator, dtype=np.float32):
    bound = 1.0 / math.sqrt(fan_in(weight_shape))
    return rng.uniform(-bound, bound, size=size).astype(dtype)


def require_rng(rng, layer):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{layer} needs rng=np.random.Generator to draw its initial weights "
                        f"(e.g. rng=np.random.default_rng(0)); got {type(rng).__name__}")
    return rng
