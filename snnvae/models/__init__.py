"""Whole models: FSVAE (spiking, Bernoulli latent), ESVAE (spiking, Poisson latent); the
registry rebuilds any from a checkpoint."""
from .config import PRESETS, FSVAEConfig, preset
from .fsvae import FSVAE, FSVAELosses, FSVAEOutput
from .esvae import ESVAE, ESVAELosses, ESVAEOutput
from .esvae_config import ESVAEConfig
from .ann_vae import (ANN_PAPER_TRAINING, ANN_PRESETS, ANN_QUICK, ANNVAE, ANNVAEConfig,
                      ANNVAELosses, ANNVAEOutput, ann_preset, kl_weight_for)
from .registry import MODELS, build_model, model_from_checkpoint
