"""Whole models: FSVAE (spiking, Bernoulli latent); the registry rebuilds any from a checkpoint."""
from .config import PRESETS, FSVAEConfig, preset
from .fsvae import FSVAE, FSVAELosses, FSVAEOutput
from .registry import MODELS, build_model, model_from_checkpoint
