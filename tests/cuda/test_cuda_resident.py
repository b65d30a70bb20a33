"""Training with the tensors resident on the device (``Module.to_device("cuda")``).

A model moved to the GPU keeps its parameters, buffers, activations, gradients and optimiser
state in DeviceArrays for the whole step: the CUDA kernels of the layers, the DeviceArray
kernels for everything between them (tensor ops, losses, the one-of-k pick, Poisson
sampling). These tests check, on tiny models in float64:

* a few AdamW steps match the same steps on the CPU (loss, every gradient, every parameter),
  the two runs in lockstep: before each step the GPU model loads the CPU model's state.
  Without that, rounding differences of 1e-16 grow through Adam into parameter differences of
  about 1e-9, and one membrane potential or Poisson rate that close to its threshold flips a
  spike and moves the loss by 1e-4 (this happened on a CI machine whose CPU rounds
  differently), which says nothing about the kernels;
* what lives where: loss, gradients, parameters, optimiser state and tdBN statistics are
  DeviceArrays after a step;
* nothing is read back to the host inside a step (no device -> host copy between the first op
  and the optimiser's update); host -> device copies are the images and the random numbers
  drawn on the host, nothing that grows with the model;
* state dicts come back to the host, and a checkpoint loads onto a model on either side;
* eval: reconstructions and samples come back as host arrays equal to the CPU's.

The simulator runs every CUDA thread as a Python thread, and a step of even these tiny models
launches a few hundred kernels: this file takes minutes, so each check rides along the few
steps there are.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
from numba import cuda

from snnvae import Tensor, backend
from snnvae.device import is_device
from snnvae.kernels.cuda import launch
from snnvae.kernels.cuda.array import asdevice
from snnvae.latent.bernoulli import BernoulliPrior
from snnvae.metrics.operations import count_operations
from snnvae.models import ANNVAE, ESVAE, FSVAE, ESVAEConfig, FSVAEConfig
from snnvae.models.ann_vae import ANNVAEConfig
from snnvae.nn import calibrate_running_statistics
from snnvae.optim import AdamW

STEPS = 2
TINY = {
    "FSVAE": (FSVAE, FSVAEConfig(hidden_channels=(3, 4), input_size=8, latent_dim=4, k=2,
                                 timesteps=3)),
    "ESVAE": (ESVAE, ESVAEConfig(hidden_channels=(3, 4), input_size=8, latent_dim=4,
                                 timesteps=3)),
    "ANNVAE": (ANNVAE, ANNVAEConfig(hidden_channels=(3, 4), input_size=8, latent_dim=4,
                                    kl_weight=0.01)),
}
IMAGES = np.random.default_rng(1).uniform(-1, 1, size=(STEPS, 2, 1, 8, 8))


def build(name, device, dtype=np.float64):
    model_cls, config = TINY[name]
    model = model_cls(config, rng=np.random.default_rng(0), dtype=dtype)
    if device == "cuda":
        model.to_device("cuda")
    return model, AdamW(model.parameters(), lr=1e-2, weight_decay=1e-3)


def on_backend(device):
    return backend.use("cuda" if device == "cuda" else "cpu")


def host(a):
    return a.copy_to_host() if is_device(a) else np.asarray(a)


def train_step(model, optimiser, device, i):
    """One AdamW step on ``device``; returns the losses (nothing is read back)."""
    with on_backend(device):
        losses = model.training_losses(IMAGES[i], np.random.default_rng(100 + i), epoch=i,
                                       epochs=10)
        optimiser.zero_grad()
        losses["loss"].backward()
        optimiser.step()
    return losses


@contextlib.contextmanager
def counting_copies():
    """Count device -> host and host -> device copies: the device array type's
    ``copy_to_host`` / ``copy_to_device`` and ``cuda.to_device`` (a copy made inside another
    counted call, as ``to_device`` may make, counts once)."""
    counts = {"to_host": 0, "to_device": 0}
    array_type = type(cuda.device_array(1))
    originals = {"copy_to_host": array_type.copy_to_host,
                 "copy_to_device": array_type.copy_to_device, "to_device": cuda.to_device}
    depth = [0]

    def counted(kind, function):
        def wrapper(*args, **kwargs):
            counts[kind] += depth[0] == 0
            depth[0] += 1
            try:
                return function(*args, **kwargs)
            finally:
                depth[0] -= 1
        return wrapper

    array_type.copy_to_host = counted("to_host", originals["copy_to_host"])
    array_type.copy_to_device = counted("to_device", originals["copy_to_device"])
    cuda.to_device = counted("to_device", originals["to_device"])
    try:
        yield counts
    finally:
        array_type.copy_to_host = originals["copy_to_host"]
        array_type.copy_to_device = originals["copy_to_device"]
        cuda.to_device = originals["to_device"]


def test_the_copy_counter_sees_copies_both_ways():
    with counting_copies() as copies:
        a = asdevice(np.arange(3.0))
        b = launch.to_device(np.arange(3.0))
        assert float(a[1] + 1) == 2.0
        a.copy_to_host(), b.copy_to_host()
    assert copies == {"to_host": 3, "to_device": 2}


# FSVAE takes a second step, with Adam's moments from the first, the other models one: the
# optimiser's kernels do not depend on the model, and a simulated step takes 15-45 s.
STEPS_OF = {"FSVAE": STEPS, "ESVAE": 1, "ANNVAE": 1}


@pytest.mark.parametrize("name", sorted(TINY))
def test_resident_training_matches_the_cpu_step_for_step(name):
    cpu_model, cpu_optimiser = build(name, "cpu")
    gpu_model, gpu_optimiser = build(name, "cuda")
    for i in range(STEPS_OF[name]):
        gpu_model.load_state_dict(cpu_model.state_dict())      # lockstep (see the docstring)
        with counting_copies() as copies:
            gpu_losses = train_step(gpu_model, gpu_optimiser, "cuda", i)
        assert copies["to_host"] == 0, f"{copies['to_host']} device -> host copies in a step"
        # the images (moved once for the encoder, once for the loss), the picks or uniforms
        # drawn on the host, small constants: a bounded count, not one per tensor op
        assert copies["to_device"] <= 4 * getattr(TINY[name][1], "timesteps", 1) + 4, copies
        assert_resident(gpu_model, gpu_optimiser, gpu_losses["loss"])
        cpu_losses = train_step(cpu_model, cpu_optimiser, "cpu", i)
        assert gpu_losses["loss"].item() == pytest.approx(cpu_losses["loss"].item(), rel=1e-9)
        for j, (p_gpu, p_cpu) in enumerate(zip(gpu_model.parameters(), cpu_model.parameters())):
            assert (p_gpu.grad is None) == (p_cpu.grad is None), f"parameter {j}: one-sided grad"
            if p_cpu.grad is not None:
                np.testing.assert_allclose(host(p_gpu.grad), p_cpu.grad, rtol=1e-7, atol=1e-10,
                                           err_msg=f"{name}: gradient of parameter {j}, step {i}")
        gpu_state, cpu_state = gpu_model.state_dict(), cpu_model.state_dict()
        for key, value in cpu_state.items():
            assert isinstance(gpu_state[key], np.ndarray), f"state dict entry {key} not on host"
            # Adam divides by sqrt(v) + 1e-8: a gradient near 1e-8 carries rounding of 1e-16
            # into its update at about 1e-9 (the NumPy and Numba CPU kernels differ that much)
            np.testing.assert_allclose(gpu_state[key], value, rtol=1e-6, atol=1e-7,
                                       err_msg=f"{name}: {key} after step {i}")


def assert_resident(model, optimiser, loss):
    """Loss, parameters, gradients, optimiser state and floating buffers live on the device."""
    assert is_device(loss.data), "the loss left the device"
    assert model.device == "cuda"
    for p in model.parameters():
        assert is_device(p.data), "a parameter left the device"
        assert p.grad is None or is_device(p.grad), "a gradient is on the host"
    for group in optimiser.state:
        for state in group:
            assert all(is_device(state[k]) for k in ("exp_avg", "exp_avg_sq") if k in state)
    for key, buffer in model.named_buffers():
        if buffer.dtype.kind == "f":
            assert is_device(buffer), f"buffer {key} is on the host"


def test_checkpoints_move_between_host_and_device():
    cpu_model, cpu_optimiser = build("FSVAE", "cpu")
    gpu_model, gpu_optimiser = build("FSVAE", "cuda")
    train_step(cpu_model, cpu_optimiser, "cpu", 0)         # Adam moments and tdBN statistics
    gpu_model.load_state_dict(cpu_model.state_dict())
    gpu_optimiser.load_state_dict(cpu_optimiser.state_dict())
    assert_resident(gpu_model, gpu_optimiser, Tensor(gpu_model.parameters()[0].data))
    for (key, got), want in zip(gpu_model.state_dict().items(), cpu_model.state_dict().values()):
        np.testing.assert_array_equal(got, want, err_msg=key)
    gpu_state, cpu_state = gpu_optimiser.state_dict(), cpu_optimiser.state_dict()
    assert gpu_state.keys() == cpu_state.keys() and any(".exp_avg" in k for k in cpu_state)
    for key, want in cpu_state.items():
        np.testing.assert_array_equal(gpu_state[key], want, err_msg=key)
    gpu_model.to_device("cpu")
    assert gpu_model.device == "cpu"
    assert all(isinstance(p.data, np.ndarray) for p in gpu_model.parameters())


def test_eval_returns_host_images_equal_to_the_cpu():
    """Reconstructions, samples and operation counts of a calibrated model (running statistics
    from a training batch, so that the tiny network fires and its output depends on the
    input)."""
    cpu_model = build("FSVAE", "cpu")[0]
    calibrate_running_statistics(
        cpu_model, lambda: cpu_model.training_losses(IMAGES[0], np.random.default_rng(3), 0, 10))
    gpu_model = build("FSVAE", "cuda")[0]
    gpu_model.load_state_dict(cpu_model.state_dict())
    results = {}
    for device, model in (("cpu", cpu_model), ("cuda", gpu_model)):
        model.eval()
        with on_backend(device):
            results[device] = (model.reconstruct(IMAGES[1], np.random.default_rng(5)),
                               model.sample(2, np.random.default_rng(6)))
            operations = count_operations(model, IMAGES[1], np.random.default_rng(5),
                                          forward=lambda m, x, r: m.reconstruct(x, r))
            results[device] += (np.array(list(operations["total"].values())),)
    reconstruction, samples, _ = results["cpu"]
    assert np.ptp(reconstruction) > 0.1 and np.ptp(samples) > 0.1, "a silent network"
    for got, want in zip(results["cuda"], results["cpu"]):
        assert isinstance(got, np.ndarray)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("prefix_updates_bn", [True, False])
def test_scheduled_sampling_of_the_prior_on_the_device(prefix_updates_bn):
    """The prior's scheduled sampling (steps t >= 5: a no-grad prefix run, a guess from host
    noise) and its tdBN statistics, with or without the prefix runs' updates."""
    priors = {}
    for device in ("cpu", "cuda"):
        prior = BernoulliPrior(4, 2, rng=np.random.default_rng(0), dtype=np.float64,
                               prefix_updates_bn=prefix_updates_bn)
        if device == "cuda":
            prior.to_device("cuda")
        priors[device] = prior
    z = (np.random.default_rng(2).uniform(size=(8, 2, 4)) < 0.4).astype(np.float64)
    outputs = {}
    for device, prior in priors.items():
        with on_backend(device):
            p = prior(prior.input_tensor(z), scheduled_p=1.0, rng=np.random.default_rng(7))
            p.sum().backward()
        outputs[device] = [host(p.data)] + [host(q.grad) for q in prior.parameters()]
        outputs[device] += list(prior.state_dict().values())
    for got, want in zip(outputs["cuda"], outputs["cpu"]):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_a_float32_step_stays_in_float32_and_matches_the_cpu():
    cpu_model, cpu_optimiser = build("FSVAE", "cpu", np.float32)
    gpu_model, gpu_optimiser = build("FSVAE", "cuda", np.float32)
    gpu_losses = train_step(gpu_model, gpu_optimiser, "cuda", 0)
    cpu_losses = train_step(cpu_model, cpu_optimiser, "cpu", 0)
    assert gpu_losses["loss"].dtype == np.float32
    assert gpu_losses["loss"].item() == pytest.approx(cpu_losses["loss"].item(), rel=1e-5)
    for j, (p_gpu, p_cpu) in enumerate(zip(gpu_model.parameters(), cpu_model.parameters())):
        assert p_gpu.dtype == np.float32 and (p_gpu.grad is None or p_gpu.grad.dtype == np.float32)
        if p_cpu.grad is not None:
            np.testing.assert_allclose(host(p_gpu.grad), p_cpu.grad, rtol=2e-3, atol=2e-5,
                                       err_msg=f"gradient of parameter {j}")


def test_moving_to_cuda_without_a_gpu_says_what_to_do(monkeypatch):
    model = build("FSVAE", "cpu")[0]
    with pytest.raises(ValueError, match="unknown device"):
        model.to_device("gpu")
    monkeypatch.setattr(launch, "gpu_found", lambda: False)
    with pytest.raises(launch.CudaUnavailableError, match="cuda.detect"):
        model.to_device("cuda")
