"""What a weighted layer keeps of its input for backward.

The weight gradient of a linear layer or a convolution needs the layer's input x. In a spiking
network that input is spikes, every value 0 or 1, and one byte per value holds it exactly: a
quarter of the memory of float32 (an eighth of float64). For FSVAE at batch 250 the spikes
saved for backward shrink from about 1 GB to 0.25 GB, and since the graph does not keep
intermediate tensors alive (``autograd``), the float32 spikes of a fused tdBN -> LIF block are
freed as soon as the next layer has run (a standalone LIF layer keeps its float spikes for its
own backward). Backward turns the bytes back into the weight's dtype, the exact same
values. Real-valued inputs (the image entering the first layer, an ANN's activations) are kept
as they are.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..device import is_device

_PROBE = 256   # a real-valued input shows itself within its first values


def keep_input(ctx, x):
    """x as a layer keeps it for backward: uint8 if it is spikes, else x itself. Only the
    weight's gradient needs x (the weight is input 1 of every layer Function here), so x stays
    as it is, with no pass over it, when the weight needs none (frozen, ``no_grad``, eval), or
    when its first values already are not all 0 or 1 (the image, an ANN's activations): only
    then does the backend's ``pack_spikes`` check and convert the whole array. An input on the
    GPU is kept as it is: the check would end in a host read that stalls every layer of the
    step."""
    if not ctx.needs_input_grad[1] or is_device(x):
        return x
    head = np.asarray(x.flat[:_PROBE])
    if not np.all((head == 0) | (head == 1)):
        return x
    packed = backend.kernels().pack_spikes(x)
    return x if packed is None else packed


def restore_input(kept, dtype):
    """The input that ``keep_input`` kept, as an array of ``dtype``."""
    return kept if kept.dtype == dtype else kept.astype(dtype)
