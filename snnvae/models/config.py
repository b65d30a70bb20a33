"""Architecture and training settings of FSVAE, held in one object that is passed in.

The paper presets follow shared/REFERENCE.md (Kamata et al. 2022 and its official configs);
``quick`` is this project's laptop preset: a true FSVAE with narrower layers and fewer steps.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FSVAEConfig:
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
    # official quirk: the posterior's no-grad prefix loop updates tdBN running statistics
    prefix_updates_bn: bool = True
    # training settings (the papers')
    lr: float = 1e-3
    weight_decay: float = 1e-3
    batch_size: int = 250
    epochs: int = 150

    def __post_init__(self):
        if self.distance not in ("mmd", "kld"):
            raise ValueError(f"distance must be 'mmd' or 'kld', got {self.distance!r}")
        size = self.input_size
        for _ in self.hidden_channels:
            if size % 2:
                raise ValueError(f"input_size {self.input_size} must be divisible by 2 for each "
                                 f"of the {len(self.hidden_channels)} encoder stages")
            size //= 2
        for name in ("latent_dim", "k", "timesteps", "in_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def bottleneck_size(self):
        """Spatial size after the encoder (2 for 32 x 32 inputs and four stages)."""
        return self.input_size // 2 ** len(self.hidden_channels)

    @property
    def weight_of_distance(self):
        if self.distance_weight is not None:
            return self.distance_weight
        return 1.0 if self.distance == "mmd" else 1e-4

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown FSVAE config fields {sorted(unknown)}")
        values = dict(values)
        if "hidden_channels" in values:
            values["hidden_channels"] = tuple(int(c) for c in values["hidden_channels"])
        return cls(**values)


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
