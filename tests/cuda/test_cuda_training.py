"""A short training run with every kernel on CUDA matches the same run on the Numba CPU kernels
step for step: the loss and every gradient, then every parameter after the AdamW update (tiny
models, float64; the shapes are tiny because the simulator is slow).

The two runs go in lockstep: before each step the CUDA model takes the CPU model's parameters.
Without that, rounding differences of 1e-16 grow through Adam into parameter differences of
about 1e-9, and one membrane potential or Poisson rate that close to its threshold flips a spike
and moves the loss by 1e-4 (this happened on a CI machine whose CPU rounds differently), which
says nothing about the kernels. Each step therefore checks one forward, backward and update from
identical parameters.

While tensors still live on the host between operations, this runs every kernel of the
backend layer on the device, with the host keeping the autograd graph and the tensor ops."""
from __future__ import annotations

import numpy as np
import pytest

from snnvae import backend
from snnvae.models import ESVAE, FSVAE, ESVAEConfig, FSVAEConfig
from snnvae.optim import AdamW

STEPS = 2
TINY_FSVAE = FSVAEConfig(hidden_channels=(3, 4), input_size=8, latent_dim=4, k=2, timesteps=3)
TINY_ESVAE = ESVAEConfig(hidden_channels=(3, 4), input_size=8, latent_dim=4, timesteps=3)
IMAGES = np.random.default_rng(1).uniform(-1, 1, size=(STEPS, 2, 1, 8, 8))


def build(model_cls, config, name):
    """A model and its AdamW optimiser, built under backend ``name`` from the same seed."""
    with backend.use(name):
        model = model_cls(config, rng=np.random.default_rng(0), dtype=np.float64)
    return model, AdamW(model.parameters(), lr=1e-2, weight_decay=1e-3)


def step(model, optimiser, name, step_index):
    """One training step on backend ``name``: (loss, [gradient copies], [parameter copies])."""
    with backend.use(name):
        rng = np.random.default_rng(100 + step_index)
        losses = model.training_losses(IMAGES[step_index], rng, epoch=step_index, epochs=10)
        optimiser.zero_grad()
        losses["loss"].backward()
        grads = [None if p.grad is None else p.grad.copy() for p in model.parameters()]
        optimiser.step()
    return losses["loss"].item(), grads, [p.data.copy() for p in model.parameters()]


@pytest.mark.parametrize("model_cls,config", [(FSVAE, TINY_FSVAE), (ESVAE, TINY_ESVAE)],
                         ids=["FSVAE", "ESVAE"])
def test_training_on_cuda_matches_the_cpu_step_for_step(model_cls, config):
    cpu_model, cpu_optimiser = build(model_cls, config, "cpu")
    gpu_model, gpu_optimiser = build(model_cls, config, "cuda")
    for i in range(STEPS):
        for p_gpu, p_cpu in zip(gpu_model.parameters(), cpu_model.parameters()):
            p_gpu.data[...] = p_cpu.data
        loss_gpu, grads_gpu, params_gpu = step(gpu_model, gpu_optimiser, "cuda", i)
        loss_cpu, grads_cpu, params_cpu = step(cpu_model, cpu_optimiser, "cpu", i)
        assert loss_gpu == pytest.approx(loss_cpu, rel=1e-9), f"loss at step {i}"
        for j, (g_gpu, g_cpu) in enumerate(zip(grads_gpu, grads_cpu)):
            assert (g_gpu is None) == (g_cpu is None), f"parameter {j} got a gradient on one side"
            if g_cpu is not None:
                np.testing.assert_allclose(g_gpu, g_cpu, rtol=1e-7, atol=1e-10,
                                           err_msg=f"gradient of parameter {j} at step {i}")
        for j, (a, b) in enumerate(zip(params_cpu, params_gpu)):
            # Adam divides by sqrt(v) + 1e-8: a gradient near 1e-8 carries rounding of 1e-16
            # into its update at about 1e-9 (the NumPy and Numba CPU kernels differ that much)
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7,
                                       err_msg=f"parameter {j} after step {i}")
