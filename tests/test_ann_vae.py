"""The ANN VAE baseline: BatchNorm2d (train and eval), LeakyReLU, the Gaussian KL and the
reparameterised sample by finite differences and by hand; BatchNorm2d against the official
tdBatchNorm golden values; the whole model by finite differences and on both backends; it
overfits a batch, reproduces bit for bit, trains under the Trainer and comes back from its
checkpoint."""
from __future__ import annotations

import math

import numpy as np
import pytest

from snnvae import F, Tensor, backend, data, nn, optim
from snnvae.gradcheck import grad_check
from snnvae.models import (ANN_PAPER_TRAINING, ANN_PRESETS, ANN_QUICK, ANNVAE, ANNVAEConfig,
                           ann_preset, kl_weight_for)
from snnvae.models.registry import model_from_checkpoint
from snnvae.train import Trainer, TrainSettings, prepare_run_dir, read_metrics

TINY = ANNVAEConfig(hidden_channels=(3, 4), input_size=8, latent_dim=5, kl_weight=0.25)


def check(fn, inputs, names=None, **kw):
    results = grad_check(fn, inputs, names, spike="spike", **kw)
    assert all(r.passed for r in results), "\n".join(map(str, results))


def tiny_model(seed=0, dtype=np.float64, **changes):
    return ANNVAE(TINY.replace(**changes), rng=np.random.default_rng(seed), dtype=dtype)


def digits(n, size=8, split="train"):
    """Real MNIST digits from the embedded subset, shrunk to size x size (PIL-exact bilinear)."""
    images, _ = data.load_embedded_mnist(split)
    return data.prepare_images(images[:n], size=size)


# --- BatchNorm2d -------------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm2d_by_finite_differences(backend_name, training):
    rng = np.random.default_rng(30)
    bn = nn.BatchNorm2d(3, dtype=np.float64)
    bn.weight.data = rng.uniform(0.5, 1.5, 3)
    bn.bias.data = rng.normal(size=3) * 0.1
    bn.running_mean[:] = rng.normal(size=3)
    bn.running_var[:] = rng.uniform(0.5, 2, 3)
    bn.train(training)
    x = Tensor(rng.normal(size=(4, 3, 3, 2)) * 2 + 1, requires_grad=True)
    R = Tensor(rng.normal(size=x.shape))
    stats = bn.running_mean.copy(), bn.running_var.copy()

    def fn():
        bn.running_mean[:], bn.running_var[:] = stats      # no drift during the differences
        return (bn(x) * R).sum()

    check(fn, [x, bn.weight, bn.bias], ["x", "gamma", "beta"])


def test_batch_norm2d_running_statistics_by_hand():
    """Channel 0 holds 1, 2, 3, 6: mean 3, biased variance 14/4, unbiased 14/3 (n = 4)."""
    bn = nn.BatchNorm2d(2, dtype=np.float64)
    x = np.array([[[[1.0, 2.0]], [[0.0, 0.0]]],
                  [[[3.0, 6.0]], [[2.0, -2.0]]]])          # (N 2, C 2, H 1, W 2)
    y = bn(Tensor(x)).data
    np.testing.assert_allclose(y[:, 0].ravel(), (np.array([1, 2, 3, 6]) - 3) / math.sqrt(3.5 + 1e-5),
                               rtol=1e-13)
    # channel 1 holds 0, 0, 2, -2: mean 0, biased variance 2, unbiased 8/3
    np.testing.assert_allclose(bn.running_mean, [0.1 * 3, 0.0], atol=1e-15)
    np.testing.assert_allclose(bn.running_var, [0.9 + 0.1 * 14 / 3, 0.9 + 0.1 * 8 / 3], rtol=1e-14)
    assert int(bn.num_batches_tracked) == 1
    # a second batch: the update compounds with momentum 0.1
    bn(Tensor(x + 1.0))
    np.testing.assert_allclose(bn.running_mean, [0.9 * 0.3 + 0.1 * 4, 0.1 * 1], rtol=1e-14)
    np.testing.assert_allclose(bn.running_var[0], 0.9 * (0.9 + 0.1 * 14 / 3) + 0.1 * 14 / 3,
                               rtol=1e-14)
    # eval mode normalises with the running statistics and leaves them alone
    bn.eval()
    before = bn.running_mean.copy(), bn.running_var.copy()
    y_eval = bn(Tensor(x)).data
    expected = (x - bn.running_mean[None, :, None, None]) / np.sqrt(
        bn.running_var[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(y_eval, expected, rtol=1e-13)
    np.testing.assert_array_equal(bn.running_mean, before[0])
    np.testing.assert_array_equal(bn.running_var, before[1])
    assert int(bn.num_batches_tracked) == 2


def test_batch_norm2d_matches_official_tdbn_golden(golden):
    """The official tdBatchNorm is BatchNorm2d over (N, H, W, T) scaled by alpha * Vth: with time
    last, (N, C, H, W, T) reshaped to (N, C, H, W*T) and gamma * 0.2 it is exactly BatchNorm2d."""
    g = golden("tdbn")
    x1, x2 = g["conv_x1"], g["conv_x2"]
    N, C, H, W, T = x1.shape
    bn = nn.BatchNorm2d(C, dtype=np.float64)
    bn.weight.data = g["conv_gamma"] * 0.2
    bn.bias.data = g["conv_beta"].copy()
    x = Tensor(x1.reshape(N, C, H, W * T), requires_grad=True)
    (bn(x) * Tensor(g["conv_R1"].reshape(x.shape))).sum().backward()
    np.testing.assert_allclose(bn(Tensor(x.data)).data.reshape(x1.shape), g["conv_a1_y1"],
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(x.grad.reshape(x1.shape), g["conv_a1_grad_x1"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(bn.weight.grad * 0.2, g["conv_a1_grad_gamma1"], rtol=1e-9)
    np.testing.assert_allclose(bn.bias.grad, g["conv_a1_grad_beta1"], rtol=1e-9)
    fresh = nn.BatchNorm2d(C, dtype=np.float64)
    fresh(Tensor(x1.reshape(N, C, H, W * T)))          # exactly one training call
    np.testing.assert_allclose(fresh.running_mean, g["conv_a1_running_mean"], rtol=1e-12)
    np.testing.assert_allclose(fresh.running_var, g["conv_a1_running_var"], rtol=1e-12)
    fresh.weight.data, fresh.bias.data = bn.weight.data.copy(), bn.bias.data.copy()
    fresh.eval()
    np.testing.assert_allclose(fresh(Tensor(x2.reshape(N, C, H, W * T))).data.reshape(x2.shape),
                               g["conv_a1_y2"], rtol=1e-10, atol=1e-12)


def test_batch_norm2d_refuses_other_layouts():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        nn.BatchNorm2d(3)(Tensor(np.zeros((2, 3, 4, 4, 1), np.float32)))
    with pytest.raises(ValueError, match="channels"):
        nn.BatchNorm2d(3)(Tensor(np.zeros((2, 4, 4, 4), np.float32)))


# --- LeakyReLU, Gaussian KL, reparameterisation --------------------------------------------------


def test_leaky_relu_by_hand_and_by_finite_differences():
    x = np.array([-2.0, -0.5, 0.5, 3.0])
    np.testing.assert_array_equal(nn.LeakyReLU()(Tensor(x)).data, [-0.02, -0.005, 0.5, 3.0])
    rng = np.random.default_rng(31)
    a = rng.normal(size=(3, 4, 2, 2))
    a[np.abs(a) < 1e-3] = 0.5                               # finite differences need no kink
    t = Tensor(a, requires_grad=True)
    R = Tensor(rng.normal(size=a.shape))
    for slope in (0.01, 0.2):
        check(lambda: (F.leaky_relu(t, slope) * R).sum(), [t])
    t.grad = None
    (F.leaky_relu(t) * R).sum().backward()
    np.testing.assert_allclose(t.grad, np.where(a > 0, 1.0, 0.01) * R.data)


def test_gaussian_kl_by_hand_by_finite_differences_and_by_monte_carlo():
    rng = np.random.default_rng(32)
    mu = Tensor(rng.normal(size=(4, 3)), requires_grad=True)
    logvar = Tensor(rng.normal(size=(4, 3)) * 0.5, requires_grad=True)
    kl = F.gaussian_kl_loss(mu, logvar)
    by_hand = sum(0.5 * (m * m + math.exp(v) - 1 - v)
                  for m, v in zip(mu.data.ravel(), logvar.data.ravel())) / 4
    assert kl.item() == pytest.approx(by_hand, rel=1e-13)
    check(lambda: F.gaussian_kl_loss(mu, logvar), [mu, logvar], ["mu", "logvar"])
    mu.grad = logvar.grad = None
    kl.backward()
    np.testing.assert_allclose(mu.grad, mu.data / 4, rtol=1e-13)
    np.testing.assert_allclose(logvar.grad, (np.exp(logvar.data) - 1) / 8, rtol=1e-12)
    assert F.gaussian_kl_loss(np.zeros((2, 3)), np.zeros((2, 3))).item() == 0.0
    # KL = E_q[log q(z) - log p(z)], estimated from samples of the first row
    m, s = mu.data[0], np.exp(logvar.data[0] / 2)
    z = m + s * np.random.default_rng(0).standard_normal((400_000, 3))
    log_ratio = (-0.5 * ((z - m) / s) ** 2 - np.log(s)) - (-0.5 * z ** 2)
    row_kl = F.gaussian_kl_loss(mu.data[:1], logvar.data[:1]).item()
    assert log_ratio.sum(axis=1).mean() == pytest.approx(row_kl, abs=0.01)


def test_reparameterised_sample_by_finite_differences_and_statistics():
    rng = np.random.default_rng(33)
    mu = Tensor(rng.normal(size=(3, 4)), requires_grad=True)
    logvar = Tensor(rng.normal(size=(3, 4)) * 0.5, requires_grad=True)
    eps = rng.standard_normal((3, 4))
    R = Tensor(rng.normal(size=(3, 4)))
    check(lambda: (F.reparameterize(mu, logvar, eps=eps) * R).sum(), [mu, logvar],
          ["mu", "logvar"])
    np.testing.assert_allclose(F.reparameterize(mu, logvar, eps=eps).data,
                               mu.data + np.exp(logvar.data / 2) * eps, rtol=1e-14)
    # the noise of rng= is rng.standard_normal in mu's dtype, so seeds reproduce it
    z = F.reparameterize(mu, logvar, np.random.default_rng(5)).data
    eps5 = np.random.default_rng(5).standard_normal((3, 4))
    np.testing.assert_array_equal(z, mu.data + np.exp(logvar.data * 0.5) * eps5)
    many = F.reparameterize(np.full((100_000, 2), 1.5), np.full((100_000, 2), math.log(4.0)),
                            np.random.default_rng(6)).data
    np.testing.assert_allclose(many.mean(axis=0), 1.5, atol=0.02)
    np.testing.assert_allclose(many.std(axis=0), 2.0, rtol=0.01)
    z32 = F.reparameterize(mu.data.astype(np.float32), logvar.data.astype(np.float32),
                           np.random.default_rng(5))
    assert z32.dtype == np.float32


def test_gaussian_ops_refuse_bad_input():
    mu = np.zeros((2, 3))
    with pytest.raises(ValueError, match="exactly one"):
        F.reparameterize(mu, mu)
    with pytest.raises(ValueError, match="exactly one"):
        F.reparameterize(mu, mu, np.random.default_rng(0), eps=mu)
    with pytest.raises(TypeError, match="Generator"):
        F.reparameterize(mu, mu, 0)
    with pytest.raises(ValueError, match="same shape"):
        F.gaussian_kl_loss(mu, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="eps has shape"):
        F.reparameterize(mu, mu, eps=np.zeros(3))


# --- the whole model ---------------------------------------------------------------------------


def test_architecture_and_presets():
    model = ANNVAE(ann_preset("mnist"), rng=np.random.default_rng(0))
    # encoder convs + BN, fc_mu and fc_var, decoder_input, decoder transposed convs + BN, final
    enc = sum(9 * a * b + b + 2 * b for a, b in [(1, 32), (32, 64), (64, 128), (128, 256)])
    dec = sum(9 * a * b + b + 2 * b for a, b in [(256, 128), (128, 64), (64, 32), (32, 32)])
    expected = enc + 2 * (1024 * 128 + 128) + (128 * 1024 + 1024) + dec + 9 * 32 + 1
    assert model.num_parameters() == expected
    names = dict(model.named_parameters())
    assert names["final_layer.3.weight"].shape == (32, 1, 3, 3)        # PyTorch layout (C_in, C_out)
    assert "encoder.3.1.running_var" in dict(model.named_buffers())
    assert ANN_PRESETS["mnist"].kl_weight == 1 / 240 == kl_weight_for(60000, 250)
    assert ANN_PRESETS["cifar10"].kl_weight == 1 / 200 and ANN_PRESETS["cifar10"].in_channels == 3
    celeba = ANNVAE(ann_preset("celeba"), rng=np.random.default_rng(0))
    assert len(celeba.encoder) == 5 and celeba.config.bottleneck_size == 2
    assert kl_weight_for(8000, 64) == 1 / 125 and kl_weight_for(8001, 64) == 1 / 126
    assert ANN_PAPER_TRAINING["weight_decay"] == 0.01 and ANN_PAPER_TRAINING["lr"] == 1e-3
    TrainSettings(**ANN_QUICK["training"])
    TINY.replace(**ANN_QUICK["model"], input_size=32)
    with pytest.raises(ValueError, match="unknown ANN VAE preset"):
        ann_preset("svhn")


def test_shapes_sampling_and_eval_options():
    model = tiny_model()
    images = digits(6)
    out = model(images, rng=np.random.default_rng(0))
    assert out.reconstruction.shape == (6, 1, 8, 8) and out.mu.shape == (6, 5)
    assert np.all(np.abs(out.reconstruction.data) <= 1)
    model.eval()
    a = model.reconstruct(images, np.random.default_rng(1))
    b = model.reconstruct(images, np.random.default_rng(2))
    assert not np.array_equal(a, b)                     # official: eval samples z too
    mean_model = tiny_model(reconstruct_with_mean=True).eval()
    np.testing.assert_array_equal(mean_model.reconstruct(images, np.random.default_rng(1)),
                                  mean_model.reconstruct(images, np.random.default_rng(2)))
    samples = model.sample(7, np.random.default_rng(3))
    assert samples.shape == (7, 1, 8, 8) and np.all(np.abs(samples) <= 1)
    np.testing.assert_array_equal(samples, model.sample(7, np.random.default_rng(3)))


def test_clear_errors():
    model = tiny_model()
    images = digits(2)
    with pytest.raises(ValueError, match="kl_weight_for"):
        tiny_model(kl_weight=None).training_losses(images, np.random.default_rng(0), 0, 1)
    losses = tiny_model(kl_weight=None).training_losses(images, np.random.default_rng(0), 0, 1,
                                                        kl_weight=0.5)
    assert losses["loss"].item() == pytest.approx(losses["recon"].item() + 0.5 * losses["kld"].item())
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        model(np.zeros((2, 1, 16, 16)), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="rng"):
        model(images)
    with pytest.raises(RuntimeError, match="eval"):
        model.sample(2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="divisible"):
        ANNVAEConfig(input_size=28)
    with pytest.raises(ValueError, match="kl_weight"):
        ANNVAEConfig(kl_weight=-1.0)


@pytest.mark.parametrize("training", [True, False])
def test_whole_model_by_finite_differences(training):
    """Every parameter, through encoder, Gaussian latent (fixed noise) and decoder, with the
    full loss MSE + kl_weight * KL; training mode uses batch statistics, eval mode running ones."""
    model = tiny_model(seed=2)
    images = digits(3)
    if not training:
        nn.calibrate_running_statistics(model, lambda: model(images, rng=np.random.default_rng(1)))
        model.eval()
    eps = np.random.default_rng(4).standard_normal((3, TINY.latent_dim))
    stats = [(b, b.copy()) for _, b in model.named_buffers()]

    def loss():
        for buffer, saved in stats:                 # no drift of the running statistics
            buffer[...] = saved
        return model.loss(images, model(images, eps=eps)).loss

    names, params = zip(*model.named_parameters())
    check(loss, list(params), list(names), samples=6, rng=np.random.default_rng(0),
          atol=1e-8, rtol=1e-5)


def test_whole_model_same_on_both_backends():
    images = digits(8, size=16)
    results = {}
    for name in ("numpy", "cpu"):
        with backend.use(name):
            model = ANNVAE(TINY.replace(input_size=16, hidden_channels=(4, 6, 8)),
                           rng=np.random.default_rng(7), dtype=np.float32)
            losses = model.training_losses(images, np.random.default_rng(8), 0, 1)
            losses["loss"].backward()
            results[name] = [losses["loss"].item()] + [p.grad for p in model.parameters()]
    assert results["numpy"][0] == pytest.approx(results["cpu"][0], rel=1e-5)
    # biases right before a training-mode BatchNorm2d have zero gradient up to rounding noise:
    # compare with an absolute tolerance on the scale of all gradients
    scale = max(np.abs(g).max() for g in results["cpu"][1:])
    for a, b in zip(results["numpy"][1:], results["cpu"][1:]):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5 * scale)


def train_steps(model, images, steps, seed=0, lr=3e-3):
    opt = optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    recon = []
    for _ in range(steps):
        losses = model.training_losses(images, rng, 0, 1)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        recon.append(losses["recon"].item())
    return recon


def test_tiny_ann_vae_overfits_a_fixed_batch():
    model = ANNVAE(TINY.replace(input_size=16, hidden_channels=(8, 16, 32), latent_dim=16,
                                kl_weight=1e-3), rng=np.random.default_rng(0))
    images = digits(16, size=16)
    recon = train_steps(model, images, 150)
    assert np.mean(recon[-10:]) < 0.25 * np.mean(recon[:5]), (recon[:5], recon[-10:])
    model.eval()
    eval_mse = float(np.mean((model.reconstruct(images, np.random.default_rng(1)) - images) ** 2))
    assert eval_mse < 0.5 * recon[0]


def test_seeded_training_reproduces_bit_for_bit():
    images = digits(8)
    runs = []
    for _ in range(2):
        model = tiny_model(seed=3, dtype=np.float32)
        recon = train_steps(model, images, 3, seed=4)
        runs.append((recon, model.state_dict()))
    assert runs[0][0] == runs[1][0]
    for name, value in runs[0][1].items():
        np.testing.assert_array_equal(value, runs[1][1][name], err_msg=name)
    other = tiny_model(seed=3, dtype=np.float32)
    assert train_steps(other, images, 3, seed=5) != runs[0][0]      # the seed matters


def test_trainer_run_and_checkpoint_rebuild(tmp_path):
    config = TINY.replace(kl_weight=kl_weight_for(24, 8))
    model = ANNVAE(config, rng=np.random.default_rng([0, 0]))
    settings = TrainSettings(epochs=1, batch_size=8, lr=3e-3, weight_decay=0.01, seed=0,
                             checkpoint_every=0, samples=4)
    run_dir = prepare_run_dir(tmp_path / "ann")
    history = Trainer(model, digits(24), digits(12, split="test"), run_dir, settings,
                      config_dict=config.to_dict(), progress=False).run()
    rows = read_metrics(run_dir / "metrics.csv")
    assert len(rows) == 1 and rows[0]["test_recon"] == pytest.approx(history[0]["test_recon"])
    assert {"train_loss", "train_recon", "train_kld", "test_kld"} <= set(rows[0])
    for picture in ("curves.png", "reconstructions.png", "samples.png"):
        assert (run_dir / picture).stat().st_size > 0
    rebuilt, meta = model_from_checkpoint(run_dir)
    assert isinstance(rebuilt, ANNVAE) and rebuilt.config == config and meta["model"] == "ANNVAE"
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(rebuilt.state_dict()[name], value, err_msg=name)
    model.eval(), rebuilt.eval()
    np.testing.assert_array_equal(rebuilt.sample(3, np.random.default_rng(9)),
                                  model.sample(3, np.random.default_rng(9)))
