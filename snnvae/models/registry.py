"""Which model classes exist, by the name a checkpoint stores, and how to rebuild one.

A checkpoint's meta holds ``model`` (the class name) and ``config`` (the config dataclass as a
dict). ``model_from_checkpoint`` turns those back into a model with the saved weights, so tools
that only get a run directory (evaluation, benchmarks) need not know which model it holds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..checkpoint import load_checkpoint
from .config import FSVAEConfig
from .esvae import ESVAE
from .esvae_config import ESVAEConfig
from .fsvae import FSVAE
from .ann_vae import ANNVAE, ANNVAEConfig

# class name -> (model class, config class). Models register here when they are added.
MODELS = {"FSVAE": (FSVAE, FSVAEConfig), "ESVAE": (ESVAE, ESVAEConfig),
          "ANNVAE": (ANNVAE, ANNVAEConfig)}


def config_from_dict(config_cls, values: dict):
    """Rebuild a frozen config dataclass from its ``to_dict()`` form (JSON turns tuples into
    lists; give them back)."""
    fields = config_cls.__dataclass_fields__
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{config_cls.__name__} has no fields {unknown}")
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return config_cls(**fixed)


def build_model(name: str, config: dict, *, seed=0, dtype=np.float32):
    try:
        model_cls, config_cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}") from None
    return model_cls(config_from_dict(config_cls, config), rng=np.random.default_rng(seed),
                     dtype=dtype)


def model_from_checkpoint(path):
    """A run directory or checkpoint file -> (model with its weights, meta)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.npz"
    model_state, _, meta, _ = load_checkpoint(path)
    model = build_model(meta.get("model", "FSVAE"), meta.get("config", {}))
    model.load_state_dict(model_state)
    return model, meta
