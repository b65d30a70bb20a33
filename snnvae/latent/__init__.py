"""Latent spaces of the spiking VAEs: FSVAE's autoregressive Bernoulli latent and ESVAE's
Poisson spikes sampled from firing rates."""
from .bernoulli import (BernoulliPosterior, BernoulliPrior, RandomPicks, ReplayPicks,
                        pick_one_of_k)
from .poisson import (RatePrior, draw_uniforms, poisson_spikes, sample_poisson_spikes,
                      smooth_sample)
