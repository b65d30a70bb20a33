"""ESVAE: the official Poisson sampler and MMD losses reproduced (esvae_pieces.npz), finite
differences of every new piece and of the whole model (smooth stand-in), the sampler's
statistics, overfitting a batch, seeded reproducibility, the Trainer's learning-rate groups and
clear errors."""
from __future__ import annotations

import numpy as np
import pytest

from snnvae import F, Tensor, data, optim
from snnvae.gradcheck import check_spiking_backward, grad_check
from snnvae.latent import RatePrior, draw_uniforms, poisson_spikes, sample_poisson_spikes
from snnvae.models import ESVAE, ESVAEConfig, MODELS, build_model, model_from_checkpoint
from snnvae.models.esvae_config import PAPER_TRAINING, PRESETS, paper_learning_rate, preset
from snnvae.train import Trainer, TrainSettings, prepare_run_dir
from conftest import time_first

TINY = ESVAEConfig(hidden_channels=(4, 8), input_size=8, latent_dim=6, timesteps=5)


def tiny_model(seed=0, dtype=np.float64, **changes):
    return ESVAE(TINY.replace(**changes), rng=np.random.default_rng(seed), dtype=dtype)


def tiny_images(n=4, seed=1, dtype=np.float64):
    return np.random.default_rng(seed).uniform(-1, 1, size=(n, 1, 8, 8)).astype(dtype)


def digits(n, split="train"):
    images, _ = data.load_embedded_mnist(split)
    return data.prepare_images(images[:n], size=8)


# --- the official pieces ----------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["spike", "straight_through"])
def test_poisson_sampler_reproduces_the_official_one(golden, mode):
    g = golden("esvae_pieces")
    r = Tensor(time_first(g["ssa_r"]), requires_grad=True)          # (T, N, C)
    U, R = time_first(g["ssa_U"]), time_first(g["ssa_R"])
    out = poisson_spikes(r, U, mode=mode)
    np.testing.assert_array_equal(out.data, time_first(g["ssa_out"]).astype(np.float64))
    assert 0 < out.data.mean() < 1
    (out * Tensor(R)).sum().backward()
    np.testing.assert_allclose(r.grad, time_first(g["ssa_grad_r"]), rtol=1e-12, atol=0)
    assert 0 < np.count_nonzero(r.grad) < r.size                   # the window cuts some off


def test_rbf_mmd_reproduces_the_official_loss_kernels_and_gradients(golden):
    g = golden("esvae_pieces")
    x = Tensor(g["mmd_source"], requires_grad=True)
    y = Tensor(g["mmd_target"], requires_grad=True)
    loss = F.rbf_mmd(x, y)
    np.testing.assert_allclose(loss.item(), float(g["rbf_loss"]), rtol=1e-12)
    loss.backward()
    scale = np.abs(g["rbf_grad_source"]).max()
    np.testing.assert_allclose(x.grad, g["rbf_grad_source"], rtol=1e-10, atol=1e-12 * scale)
    np.testing.assert_allclose(y.grad, g["rbf_grad_target"], rtol=1e-10, atol=1e-12 * scale)
    kernels = F.rbf_kernels(np.concatenate([g["mmd_source"], g["mmd_target"]]))
    np.testing.assert_allclose(kernels.data, g["rbf_kernels"], rtol=1e-12)


def test_linear_mmd_reproduces_the_official_loss_and_gradients(golden):
    """The official linear MMD computes in float32 (golden README); we compute in float64."""
    g = golden("esvae_pieces")
    x = Tensor(g["mmd_source"], requires_grad=True)
    y = Tensor(g["mmd_target"], requires_grad=True)
    loss = F.linear_mmd(x, y)
    np.testing.assert_allclose(loss.item(), float(g["lin_loss"]), rtol=1e-6)
    loss.backward()
    for ours, theirs in ((x.grad, g["lin_grad_source"]), (y.grad, g["lin_grad_target"])):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9 * np.abs(theirs).max())


# --- MMD by hand and by finite differences ------------------------------------------------------

def test_mmd_values_by_hand():
    # one row each, x = 0 and y = 1 in one dimension: d = [[0, 1], [1, 0]], b = 2 / (4 - 2) = 1,
    # bandwidths 1/4, 1/2, 1, 2, 4; K_xx = K_yy = 5, K_xy = sum_i exp(-1 / bw_i)
    kxy = sum(np.exp(-1.0 / bw) for bw in (0.25, 0.5, 1.0, 2.0, 4.0))
    np.testing.assert_allclose(F.rbf_mmd(np.zeros((1, 1)), np.ones((1, 1))).item(), 10 - 2 * kxy,
                               rtol=1e-14)
    x = np.array([[0.0, 1.0], [1.0, 1.0]])
    y = np.array([[0.5, 0.0], [0.5, 0.0], [0.5, 0.0]])
    # means (0.5, 1) and (0.5, 0): |delta|^2 = 1
    np.testing.assert_allclose(F.linear_mmd(x, y).item(), 1.0, rtol=1e-14)
    # identical samples: both MMDs are 0; all rows equal: the bandwidth has nothing to go by
    np.testing.assert_allclose(F.rbf_mmd(x, x).item(), 0.0, atol=1e-14)
    np.testing.assert_allclose(F.rbf_mmd(np.ones((3, 2)), np.ones((2, 2))).item(), 0.0, atol=1e-14)
    d = F.pairwise_sq_distances(x).data
    np.testing.assert_array_equal(np.diag(d), 0.0)
    np.testing.assert_allclose(d[0, 1], 1.0)


@pytest.mark.parametrize("rows", [(5, 5), (4, 7)])
def test_mmd_gradients_by_finite_differences(rows):
    rng = np.random.default_rng(11)
    x = Tensor(rng.uniform(size=(rows[0], 3)), requires_grad=True)
    y = Tensor(rng.uniform(size=(rows[1], 3)), requires_grad=True)
    b = 0.37   # a fixed bandwidth: the returned value is then exactly what is differentiated
    for fn in (lambda: F.rbf_mmd(x, y, bandwidth=b), lambda: F.linear_mmd(x, y)):
        results = grad_check(fn, [x, y], ["x", "y"], spike="spike", atol=1e-8, rtol=1e-5)
        assert all(r.passed for r in results), "\n".join(map(str, results))


def test_rbf_bandwidth_is_detached():
    """The data-dependent bandwidth is a constant for the gradient: the gradient equals that of
    the same loss with the bandwidth fixed at the data's value, and differs from the total
    derivative that central differences of the data-dependent loss measure."""
    rng = np.random.default_rng(12)
    x = Tensor(rng.uniform(size=(5, 3)), requires_grad=True)
    y = Tensor(rng.uniform(size=(5, 3)), requires_grad=True)
    b = F.rbf_bandwidth(F.pairwise_sq_distances(F.concat([x, y], axis=0)))
    F.rbf_mmd(x, y).backward()
    detached = x.grad.copy()
    x.grad = None
    F.rbf_mmd(x, y, bandwidth=b).backward()
    np.testing.assert_allclose(detached, x.grad, rtol=1e-12)
    results = grad_check(lambda: F.rbf_mmd(x, y), [x], spike="spike", atol=1e-8, rtol=1e-5)
    assert not results[0].passed, "the bandwidth should not be differentiated"


# --- the sampler and the sample layer -----------------------------------------------------------

def test_poisson_sampler_stand_in_by_finite_differences_and_spiking_backward():
    rng = np.random.default_rng(13)
    r = Tensor(rng.uniform(size=(4, 3)), requires_grad=True)          # (N, C), shared over T
    U = draw_uniforms(rng, (6, 4, 3))
    R = Tensor(rng.standard_normal((6, 4, 3)))
    fn = lambda: (poisson_spikes(r, U) * R).sum()                      # noqa: E731
    results = grad_check(fn, [r], ["rate"], spike="smooth")
    assert all(x.passed for x in results), "\n".join(map(str, results))
    spiking = check_spiking_backward(fn, [r], ["rate"])
    assert all(x.passed for x in spiking), "\n".join(map(str, spiking))
    # and the spiking gradient is the surrogate summed over the T steps
    r.grad = None
    fn().backward()
    expected = (R.data * (np.abs(r.data - U) < 0.5)).sum(axis=0)
    np.testing.assert_allclose(r.grad, expected, rtol=1e-14)


def test_poisson_sampler_fires_at_the_rate_with_fresh_uniforms():
    rng = np.random.default_rng(14)
    rates = np.array([[0.0, 0.1, 0.5, 0.9, 1.0]])
    z, U = sample_poisson_spikes(rates, 20000, rng)
    freq = z.data.mean(axis=(0, 1))
    sigma = np.sqrt(rates[0] * (1 - rates[0]) / 20000)
    assert np.all(np.abs(freq - rates[0]) <= 4.5 * sigma + 1e-12), freq
    assert len(np.unique(U[:, 0, 2])) == 20000                         # fresh at every step
    again, _ = sample_poisson_spikes(rates, 20000, np.random.default_rng(14))
    np.testing.assert_array_equal(z.data, again.data)


def test_sample_layer_by_finite_differences():
    prior = RatePrior(5, rng=np.random.default_rng(15), dtype=np.float64)
    noise = np.random.default_rng(16).standard_normal((7, 5))
    R = Tensor(np.random.default_rng(17).standard_normal((7, 5)))
    rates = prior(noise=noise)
    assert np.all((rates.data > 0) & (rates.data < 1))
    names, params = zip(*prior.named_parameters())
    assert names == ("sample_layer.weight", "sample_layer.bias")
    results = grad_check(lambda: (prior(noise=noise) * R).sum(), list(params), list(names),
                         spike="spike")
    assert all(r.passed for r in results), "\n".join(map(str, results))
    # noise comes from the generator: the same seed gives the same rates
    a = prior(7, np.random.default_rng(3)).data
    np.testing.assert_array_equal(a, prior(7, np.random.default_rng(3)).data)
    assert not np.array_equal(a, prior(7, np.random.default_rng(4)).data)


# --- the whole model ----------------------------------------------------------------------------

@pytest.mark.parametrize("distance", ["rbf", "linear"])
def test_whole_model_gradients_by_finite_differences(distance):
    """Every parameter (encoder, sample layer, decoder) in training mode through the smooth
    stand-ins of LIF and sampler, with the uniforms and the noise held fixed and (rbf) the
    bandwidth fixed; lambda = 1 so that the MMD term's gradient is not lost in the MSE's."""
    model = tiny_model(seed=2, distance=distance, distance_weight=1.0)
    images = tiny_images(4)
    rng = np.random.default_rng(4)
    U = rng.random((TINY.timesteps, 4, TINY.latent_dim))
    noise = rng.standard_normal((4, TINY.latent_dim))

    def loss():
        out = model(images, uniforms=U, noise=noise)
        return model.loss(images, out, bandwidth=0.8).loss

    names, params = zip(*model.named_parameters())
    results = grad_check(loss, list(params), list(names), samples=4,
                         rng=np.random.default_rng(0), atol=1e-7, rtol=1e-4)
    failed = [str(r) for r in results if not r.passed]
    assert not failed, "\n".join(failed)
    assert model.prior.sample_layer.weight.grad is not None
    assert np.abs(model.prior.sample_layer.weight.grad).max() > 0      # the prior learns via MMD
    spiking = check_spiking_backward(loss, list(params), list(names))
    assert all(r.passed for r in spiking), "\n".join(map(str, spiking))


def test_forward_shapes_sampling_and_seeded_draws():
    model = tiny_model()
    images = tiny_images(3)
    out = model(images, rng=np.random.default_rng(0))
    T, C = TINY.timesteps, TINY.latent_dim
    assert out.z.shape == (T, 3, C) and out.r_q.shape == out.r_p.shape == (3, C)
    assert set(np.unique(out.z.data)) <= {0.0, 1.0}
    np.testing.assert_allclose(out.r_q.data, model.encode(images).data.mean(axis=0), rtol=1e-14)
    again = model(images, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(out.reconstruction.data, again.reconstruction.data)
    # the rng draws the uniforms first, then the noise
    rng = np.random.default_rng(0)
    U = rng.random((T, 3, C))
    noise = rng.standard_normal((3, C))
    replay = model(images, uniforms=U, noise=noise)
    np.testing.assert_array_equal(replay.z.data, out.z.data)
    np.testing.assert_array_equal(replay.r_p.data, out.r_p.data)
    from snnvae.nn import calibrate_running_statistics
    calibrate_running_statistics(model, lambda: model(tiny_images(8), rng=np.random.default_rng(1)))
    model.eval()
    samples = model.sample(5, np.random.default_rng(2))
    assert samples.shape == (5, 1, 8, 8) and np.all(np.abs(samples) <= 1)
    np.testing.assert_array_equal(samples, model.sample(5, np.random.default_rng(2)))
    assert samples.std(axis=0).max() > 0                              # not all the same image


def test_tiny_esvae_overfits_a_fixed_batch():
    """150 steps on 8 digits: the reconstruction error falls far below its start, and each
    reconstruction is closer to its own digit than to the other digits of the batch (the latent
    spikes carry information about the input)."""
    model = ESVAE(TINY.replace(latent_dim=16, timesteps=6), rng=np.random.default_rng(0))
    images = digits(8)
    opt = optim.AdamW(model.parameter_groups(), lr=5e-3, weight_decay=1e-3)
    for group in opt.param_groups:
        group["lr"] *= group["lr_scale"]
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(150):
        out = model.training_losses(images, rng, 0, 1)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["recon"].item())
    assert np.mean(losses[-10:]) < 0.2 * np.mean(losses[:5]), (losses[:5], losses[-10:])
    recon = model.reconstruct(images, rng)
    own = np.mean((recon - images) ** 2)
    others = np.mean([np.mean((recon - np.roll(images, k, axis=0)) ** 2) for k in range(1, 8)])
    assert own < 0.9 * others, (own, others)


# --- training: groups, learning rates, reproducibility, checkpoints -----------------------------

def settings(**kw):
    base = dict(epochs=2, batch_size=8, lr=2e-3, seed=0, checkpoint_every=0, samples=4,
                lr_schedule="cosine")
    base.update(kw)
    return TrainSettings(**base)


def trainer(tmp_path, name, model_seed=0, resume=False, **kw):
    model = ESVAE(TINY, rng=np.random.default_rng([model_seed, 0]))
    return Trainer(model, digits(32), digits(16, "test"),
                   prepare_run_dir(tmp_path / name, resume=resume), settings(**kw),
                   config_dict=TINY.to_dict(), progress=False)


def without_time(history):
    return [{k: v for k, v in row.items() if k != "train_minutes"} for row in history]


def test_trainer_uses_the_parameter_groups_and_scales_their_learning_rates(tmp_path):
    t = trainer(tmp_path, "groups", epochs=1)
    groups = t.optimizer.param_groups
    assert [g["lr_scale"] for g in groups] == [1.0, 10.0]
    assert groups[1]["params"] == t.model.prior.sample_layer.parameters()
    assert sum(len(g["params"]) for g in groups) == len(t.model.parameters())
    assert [g["lr"] for g in groups] == [2e-3, 2e-2]                 # before the first step
    seen = []
    original = t.optimizer.step

    def step():
        seen.append([g["lr"] for g in t.optimizer.param_groups])
        original()
    t.optimizer.step = step
    t.run()
    from snnvae.train import learning_rate
    expected = [learning_rate(t.settings, s, 4) for s in range(4)]   # cosine over 4 steps
    np.testing.assert_allclose([a for a, _ in seen], expected, rtol=1e-15)
    np.testing.assert_allclose([b for _, b in seen], [10 * e for e in expected], rtol=1e-15)
    assert expected[1] < expected[0]


def test_seeded_runs_reproduce_and_resume_round_trips_the_groups(tmp_path):
    # constant lr: a cosine schedule would depend on the number of epochs, which the cut run
    # changes
    a, b = trainer(tmp_path, "a", lr_schedule="constant"), trainer(tmp_path, "b", lr_schedule="constant")
    hist_a, hist_b = a.run(), b.run()
    assert without_time(hist_a) == without_time(hist_b)
    for (name, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    assert trainer(tmp_path, "c", seed=1, lr_schedule="constant").run()[-1]["train_loss"] != hist_a[-1]["train_loss"]
    # one epoch, then resume into a freshly built trainer: the same as two epochs straight
    trainer(tmp_path, "cut", epochs=1, lr_schedule="constant").run()
    resumed = trainer(tmp_path, "cut", model_seed=7, resume=True, lr_schedule="constant")
    resumed.restore()
    assert [g["lr_scale"] for g in resumed.optimizer.param_groups] == [1.0, 10.0]
    assert without_time(resumed.run()) == without_time(hist_a)
    for (name, p), (_, q) in zip(a.model.named_parameters(), resumed.model.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    model, meta = model_from_checkpoint(tmp_path / "cut")
    assert isinstance(model, ESVAE) and meta["model"] == "ESVAE" and model.config == TINY


def test_paper_settings_presets_and_registry():
    assert paper_learning_rate(0.003, 256) == pytest.approx(0.003072)
    assert paper_learning_rate(1e-3, 250) == 1e-3
    assert PAPER_TRAINING["mnist"]["batch_size"] == 256 and PAPER_TRAINING["mnist"]["lr"] == 0.003
    assert set(PRESETS) == {"mnist", "fashion", "cifar10", "celeba"}
    assert preset("mnist").latent_dim == 32 and preset("cifar10").latent_dim == 128
    assert preset("mnist").timesteps == 16 and preset("mnist").distance_weight == 0.001
    assert preset("celeba").bottleneck_size == 2 and preset("celeba").in_channels == 3
    model = ESVAE(preset("mnist"), rng=np.random.default_rng(0))
    assert model.prior.num_parameters() == 32 * 32 + 32
    assert MODELS["ESVAE"][0] is ESVAE
    rebuilt = build_model("ESVAE", TINY.to_dict())
    assert isinstance(rebuilt, ESVAE) and rebuilt.config == TINY


def test_clear_errors():
    with pytest.raises(ValueError, match="distance must be"):
        ESVAEConfig(distance="kld")
    with pytest.raises(ValueError, match="divisible by 2"):
        ESVAEConfig(input_size=30)
    with pytest.raises(ValueError, match="unknown ESVAE preset"):
        preset("imagenet")
    model = tiny_model()
    with pytest.raises(ValueError, match=r"ESVAE expects images of shape \(N, 1, 8, 8\)"):
        model(np.zeros((2, 1, 9, 9)), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="needs rng"):
        model(tiny_images(2))
    with pytest.raises(RuntimeError, match="eval"):
        model.sample(2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="must broadcast"):
        poisson_spikes(np.ones((3, 4)), np.ones((5, 4, 3)))
    with pytest.raises(TypeError, match="Generator"):
        draw_uniforms(42, (2, 2))
    with pytest.raises(ValueError, match="same D"):
        F.rbf_mmd(np.ones((3, 2)), np.ones((3, 4)))
    with pytest.raises(TypeError, match="cannot combine"):
        F.linear_mmd(np.ones((3, 2), np.float32), np.ones((3, 2)))
