"""Latent spaces of the spiking VAEs: FSVAE's autoregressive Bernoulli latent."""
from .bernoulli import (BernoulliPosterior, BernoulliPrior, RandomPicks, ReplayPicks,
                        pick_one_of_k)
