"""Architecture of FSVAE, held in one object that is passed in (never a global).

The paper presets follow shared/REFERENCE.md (Kamata et al. 2022 and its official configs).
Training settings (AdamW lr 1e-3, weight decay 1e-3, batch 250, 150 epochs in the papers) live in
``snnvae.train.TrainSettings``; examples/mnist_fsvae.py holds the quick and paper choices.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


class ModelConfig:
    """What every model config shares (mixed into frozen dataclasses): the encoder-size check,
    the bottleneck size, replace() and to_dict()."""

    def check_sizes(self, *positive):
        """input_size must halve cleanly at every encoder stage; the named fields be >= 1."""
        size = self.input_size
        for _ in self.hidden_channels:
            if size % 2:
                raise ValueError(f"input_size {self.input_size} must be divisible by 2 for each "
                                 f"of the {len(self.hidden_channels)} encoder stages")
            size //= 2
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def bottleneck_size(self):
        """Spatial size after the encoder (2 for 32 x 32 inputs and four stages)."""
        return self.input_size // 2 ** len(self.hidden_channels)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class FSVAEConfig(ModelConfig):
    in_channels: int = 1
    input_size: int = 32
    hidden_channels: tuple = (32, 64, 128, 256)
    latent_dim: int = 128
    k: int = 20
    timesteps: int = 16
    distance: str = "mmd"                 # "mmd" (PSP-based, weight 1) or "kld" (weight 1e-4)
    distance_weight: float | None = None  # None: the paper's weight for the chosen distance
    scheduled_sampling: bool = True
    # neuron options (defaults reproduce the official code)
    window_center: float = 0.0
    detach_reset: bool = False
    # official quirk: the no-grad prefix runs (posterior sampling loop, prior scheduled sampling)
    # update the tdBN running statistics; False keeps them to the one update of the full pass
    prefix_updates_bn: bool = True

    def __post_init__(self):
        if self.distance not in ("mmd", "kld"):
            raise ValueError(f"distance must be 'mmd' or 'kld', got {self.distance!r}")
        self.check_sizes("latent_dim", "k", "timesteps", "in_channels")

    @property
    def weight_of_distance(self):
        if self.distance_weight is not None:
            return self.distance_weight
        return 1.0 if self.distance == "mmd" else 1e-4


PRESETS = {
    "mnist": FSVAEConfig(),
    "fashion": FSVAEConfig(),
    "cifar10": FSVAEConfig(in_channels=3),
    "celeba": FSVAEConfig(in_channels=3, input_size=64, hidden_channels=(32, 64, 128, 256, 512)),
}


def preset(name: str) -> FSVAEConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
