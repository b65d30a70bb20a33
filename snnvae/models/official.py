"""Official FSVAE state dicts -> ours.

The names are the same (our module tree mirrors the official one). What differs:
* tdConv / tdConvTranspose weights are Conv3d / ConvTranspose3d weights with a kernel of time
  extent 1, (C_out, C_in, k, k, 1) / (C_in, C_out, k, k, 1): the trailing axis is dropped.
* buffers the official code keeps but we compute instead: ``prior.initial_input`` and
  ``posterior.initial_input`` (the zero z_{-1}) and ``membrane_output_layer.coef``
  (0.8^(T-1-t)); they are checked, then dropped.
"""
from __future__ import annotations

import numpy as np

COMPUTED_BUFFERS = ("prior.initial_input", "posterior.initial_input", "membrane_output_layer.coef")


def convert_official_fsvae_state(state: dict, timesteps: int) -> dict:
    out = {}
    for name, value in state.items():
        value = np.asarray(value)
        if name in COMPUTED_BUFFERS:
            _check_computed(name, value, timesteps)
            continue
        if name.endswith(".weight") and value.ndim == 5:
            if value.shape[-1] != 1:
                raise ValueError(f"{name}: expected a (.., k, k, 1) time-distributed kernel, got "
                                 f"{value.shape}")
            value = value[..., 0]
        out[name] = value
    return out


def _check_computed(name, value, timesteps):
    if name.endswith("initial_input") and np.any(value != 0):
        raise ValueError(f"{name} is not zero; this model assumes z_(-1) = 0")
    if name == "membrane_output_layer.coef":
        expected = 0.8 ** (timesteps - 1 - np.arange(timesteps))
        if value.size != timesteps or not np.allclose(value.ravel(), expected):
            raise ValueError(f"{name} does not hold 0.8^(T-1-t) for T = {timesteps}: the checkpoint "
                             f"was made for another number of time steps ({value.size})")
