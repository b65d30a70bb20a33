"""Whole models: FSVAE (spiking, Bernoulli latent)."""
from .config import PRESETS, FSVAEConfig, preset
from .fsvae import FSVAE, FSVAELosses, FSVAEOutput
