"""FSVAE on a tiny configuration: generation, losses and the whole model by finite differences,
presets, the prefix-loop quirk and its clean option, and clear errors."""
from __future__ import annotations

import numpy as np
import pytest

from snnvae import F, Tensor
from snnvae.autograd import no_grad
from snnvae.gradcheck import check_spiking_backward, grad_check
from snnvae.latent import RandomPicks, ReplayPicks
from snnvae.models import FSVAE, PRESETS, FSVAEConfig, preset
from snnvae.nn import monitor_firing_rates

TINY = FSVAEConfig(hidden_channels=(4, 8), input_size=8, latent_dim=6, k=3, timesteps=5)


def tiny_model(seed=0, dtype=np.float64, **changes):
    return FSVAE(TINY.replace(**changes), rng=np.random.default_rng(seed), dtype=dtype)


def tiny_images(n=3, seed=1, dtype=np.float64):
    return np.random.default_rng(seed).uniform(-1, 1, size=(n, 1, 8, 8)).astype(dtype)


def warm_up(model, images):
    """One training-mode call with momentum 1, so that the running tdBN statistics are those of
    this batch (with the initial mean 0 / variance 1 the eval-mode network is silent)."""
    from snnvae.nn import calibrate_running_statistics
    calibrate_running_statistics(model, lambda: model(images, rng=np.random.default_rng(5)))
    assert model.encoder[0].bn.momentum == 0.1                 # restored


def test_incremental_generation_equals_rerunning_the_prefix(backend_name):
    model = tiny_model()
    warm_up(model, tiny_images(8))
    model.eval()
    fast = model.prior.sample(7, TINY.timesteps, RandomPicks(TINY.k, np.random.default_rng(3)))
    slow = model.prior.sample_by_prefix(7, TINY.timesteps, RandomPicks(TINY.k, np.random.default_rng(3)))
    assert 0 < fast.mean() < 1                       # the prior really spikes
    np.testing.assert_array_equal(fast, slow)
    images = model.sample(4, np.random.default_rng(0))
    assert images.shape == (4, 1, 8, 8) and np.all(np.abs(images) <= 1)


def eval_posterior_case():
    """A warmed-up tiny model in eval mode, the encoded spikes x of 4 images (T, 4, C) and
    one-of-k picks (T, 4, C) to replay."""
    model = tiny_model()
    images = tiny_images(4)
    warm_up(model, images)
    model.eval()
    picks = np.random.default_rng(9).integers(0, TINY.k, size=(TINY.timesteps, 4, TINY.latent_dim))
    return model, model.encode(images), picks


def test_eval_posterior_stepping_equals_official_prefix_loop(backend_name):
    """Eval mode steps the posterior in O(T); re-running every prefix must give the same z."""
    model, x, picks = eval_posterior_case()
    q_fast, z_fast = model.posterior(x, ReplayPicks(picks))
    # the official way: re-run the network on the prefix for every step
    z_in = np.zeros((TINY.timesteps, 4, TINY.latent_dim))
    for t in range(TINY.timesteps - 1):
        q_t = model.posterior.spikes(x[:t + 1], Tensor(z_in[:t + 1])).data[t]
        z_in[t + 1] = np.take_along_axis(q_t, picks[t][..., None], axis=-1)[..., 0]
    q_slow, z_slow = model.posterior(x, ReplayPicks(picks), z_in=z_in)
    np.testing.assert_array_equal(q_fast.data, q_slow.data)
    np.testing.assert_array_equal(z_fast.data, z_slow.data)


def test_eval_without_gradients_skips_the_posteriors_second_pass(backend_name):
    """Without gradients the posterior's steps are its whole output (no second pass): they
    must give what the two-pass forward gives, and the firing-rate monitor still sees them."""
    model, x, picks = eval_posterior_case()
    with monitor_firing_rates(model.posterior) as two_pass:
        q_grad, z_grad = model.posterior(x, ReplayPicks(picks))
    with no_grad(), monitor_firing_rates(model.posterior) as stepped:
        q_fast, z_fast = model.posterior(x, ReplayPicks(picks))
    assert 0 < q_fast.data.mean() < 1                  # the posterior really spikes
    np.testing.assert_array_equal(q_fast.data, q_grad.data)
    np.testing.assert_array_equal(z_fast.data, z_grad.data)
    assert set(stepped) == set(two_pass) and len(stepped["layers.2"]) == TINY.timesteps
    for name, rates in stepped.items():                # the mean of the steps is the pass's rate
        assert np.mean(rates) == pytest.approx(two_pass[name][-1], abs=1e-12)
    assert np.mean(stepped["layers.2"]) == pytest.approx(q_fast.data.mean(), abs=1e-12)


def test_one_of_k_pick_is_a_bernoulli_draw_with_rate_spikes_over_k():
    rng = np.random.default_rng(0)
    q = np.zeros((1, 1, 1, 4))
    q[..., :3] = 1                                   # 3 of 4 spikes -> P(z = 1) = 0.75
    draws = [float(model_pick(q, rng)) for _ in range(4000)]
    assert abs(np.mean(draws) - 0.75) < 0.03


def model_pick(q, rng):
    from snnvae.latent import pick_one_of_k
    return pick_one_of_k(Tensor(q), rng.integers(0, q.shape[-1], size=q.shape[:-1])).data.item()


def test_pick_gradient_goes_to_the_chosen_spike_only():
    from snnvae.latent import pick_one_of_k
    q = Tensor(np.random.default_rng(0).uniform(size=(2, 3, 4)), requires_grad=True)
    picks = np.array([[0, 3, 1], [2, 2, 0]])
    pick_one_of_k(q, picks).sum().backward()
    expected = np.zeros((2, 3, 4))
    np.put_along_axis(expected, picks[..., None], 1.0, axis=-1)
    np.testing.assert_array_equal(q.grad, expected)


def _whole_model_loss(model, images, z_in, z_prior, picks, distance):
    x = model.encode(images)
    q_z, z = model.posterior(x, ReplayPicks(picks), z_in=z_in)
    p_z = model.prior(z_prior)
    recon = F.mse_loss(model.decode(z), Tensor(images))
    dist = F.psp_mmd_loss(q_z, p_z) if distance == "mmd" else F.bernoulli_kld_loss(q_z, p_z)
    return recon + dist * (1.0 if distance == "mmd" else 0.5)


@pytest.mark.parametrize("distance", ["mmd", "kld"])
def test_whole_model_gradients_by_finite_differences(distance):
    """Every parameter of encoder, posterior, prior and decoder through the smooth stand-in, in
    training mode (batch statistics). The latent inputs are sampled without gradient by design,
    so they are held fixed (teacher forcing) while the parameters are perturbed."""
    model = tiny_model(seed=2)
    images = tiny_images(3)
    rng = np.random.default_rng(4)
    T, C = TINY.timesteps, TINY.latent_dim
    z_in = (rng.random((T, 3, C)) < 0.4).astype(np.float64)
    z_in[0] = 0
    z_prior = (rng.random((T, 3, C)) < 0.4).astype(np.float64)
    picks = rng.integers(0, TINY.k, size=(T, 3, C))
    names, params = zip(*model.named_parameters())
    results = grad_check(lambda: _whole_model_loss(model, images, z_in, z_prior, picks, distance),
                         list(params), list(names), samples=4, rng=np.random.default_rng(0),
                         atol=1e-7, rtol=1e-4)
    failed = [str(r) for r in results if not r.passed]
    assert not failed, "\n".join(failed)
    # and the spiking backward equals the straight-through derivative of the stand-in
    spiking = check_spiking_backward(
        lambda: _whole_model_loss(model, images, z_in, z_prior, picks, distance), list(params), list(names))
    assert all(r.passed for r in spiking), "\n".join(map(str, spiking))


def test_distance_losses_by_finite_differences_and_by_hand():
    rng = np.random.default_rng(6)
    q = Tensor(rng.uniform(size=(4, 2, 3, 5)), requires_grad=True)
    p = Tensor(rng.uniform(size=(4, 2, 3, 5)), requires_grad=True)
    for fn in (F.psp_mmd_loss, F.bernoulli_kld_loss):
        results = grad_check(lambda: fn(q, p), [q, p], spike="spike")
        assert all(r.passed for r in results), "\n".join(map(str, results))
    # by hand: T = 2, one sample, one channel, k = 2 with rates q = (1, 0.5), p = (0, 0.5);
    # PSP (tau_s 2): q -> (0.5, 0.5), p -> (0, 0.25); mean of squared differences (0.25 + 0.0625)/2
    qz = Tensor(np.array([1, 1, 1, 0], float).reshape(2, 1, 1, 2))
    pz = Tensor(np.array([0, 0, 1, 0], float).reshape(2, 1, 1, 2))
    np.testing.assert_allclose(F.psp_mmd_loss(qz, pz).item(), (0.25 + 0.0625) / 2)
    # KL of equal rates is 0; of q=1, p=0 with smoothing 0.01: log(1.01/0.01) + 0
    np.testing.assert_allclose(F.bernoulli_kld_loss(qz, qz).item(), 0.0, atol=1e-15)
    one = Tensor(np.ones((1, 1, 1, 1)))
    zero = Tensor(np.zeros((1, 1, 1, 1)))
    np.testing.assert_allclose(F.bernoulli_kld_loss(one, zero).item(), np.log(1.01 / 0.01))


def test_prefix_loop_quirk_and_clean_option():
    images = tiny_images(4)
    quirky, clean = tiny_model(), tiny_model(prefix_updates_bn=False)
    quirky(images, rng=np.random.default_rng(0))
    clean(images, rng=np.random.default_rng(0))
    T = TINY.timesteps
    assert int(quirky.posterior.layers[0].bn.num_batches_tracked) == T        # T-1 prefixes + 1
    assert int(clean.posterior.layers[0].bn.num_batches_tracked) == 1
    assert int(quirky.encoder[0].bn.num_batches_tracked) == 1


def _count_deltas_with_runner(monkeypatch, runner_on):
    """Switch the prefix runner's delta updates on or off (off: the network called on each
    prefix, as when a layer is instrumented); returns the list the delta updates append to."""
    from snnvae.kernels import cpu
    from snnvae.latent import bernoulli
    deltas = []
    original = cpu.linear_delta_into
    monkeypatch.setattr(cpu, "linear_delta_into", lambda *a: deltas.append(1) or original(*a))
    init = bernoulli._PrefixNetwork.__init__

    def forced(self, layers):
        init(self, layers)
        self.instrumented = self.instrumented or not runner_on
    monkeypatch.setattr(bernoulli._PrefixNetwork, "__init__", forced)
    return deltas


def _running_stats(layers):
    return [(layer.bn.running_mean.copy(), layer.bn.running_var.copy()) for layer in layers]


def _training_posterior(model, x, runner_on, monkeypatch):
    """The posterior's training-mode forward with the prefix runner on or off: its q_z, z, the
    running statistics of its layers and the number of delta updates."""
    deltas = _count_deltas_with_runner(monkeypatch, runner_on)
    with no_grad():
        q, z = model.posterior(x, RandomPicks(TINY.k, np.random.default_rng(4)))
    monkeypatch.undo()
    return q.data, z.data, _running_stats(model.posterior.layers), len(deltas)


def test_the_prefix_runner_equals_calling_the_network_on_each_prefix(monkeypatch):
    """Training mode re-runs the posterior on every prefix; the runner moves the linear outputs
    of the rows seen before to their new inputs instead of recomputing them: the same spikes,
    samples and running statistics."""
    images = tiny_images(6)
    results = []
    for runner_on in (True, False):
        model = tiny_model(seed=2)
        model.train()
        with no_grad():
            x = model.encode(images)
        results.append(_training_posterior(model, x, runner_on, monkeypatch))
    (q, z, stats, deltas), (q_want, z_want, stats_want, no_deltas) = results
    layers = len(stats)
    assert deltas == layers * (TINY.timesteps - 2) and no_deltas == 0
    np.testing.assert_array_equal(q, q_want)
    np.testing.assert_array_equal(z, z_want)
    assert 0 < z.mean() < 1
    for (mean, var), (mean_want, var_want) in zip(stats, stats_want):
        np.testing.assert_allclose(mean, mean_want, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(var, var_want, rtol=1e-12, atol=1e-13)


def test_the_prefix_runner_in_the_priors_scheduled_sampling(monkeypatch):
    """The prior's scheduled sampling re-runs it on prefixes too (coin-gated, so some prefixes
    are skipped and the runner meets several new rows at once): the same result either way."""
    z = (np.random.default_rng(7).random((8, 5, TINY.latent_dim)) < 0.4).astype(np.float64)
    results = []
    for runner_on in (True, False):
        model = tiny_model(seed=2, timesteps=8).train()
        deltas = _count_deltas_with_runner(monkeypatch, runner_on)
        with no_grad():
            p = model.prior(Tensor(z), 0.6, np.random.default_rng(8), first_scheduled_step=2)
        monkeypatch.undo()
        results.append((p.data, _running_stats(model.prior.layers), len(deltas)))
    (p, stats, deltas), (p_want, stats_want, no_deltas) = results
    assert deltas > 0 and no_deltas == 0
    np.testing.assert_array_equal(p, p_want)
    assert 0 < p.mean() < 1
    for (mean, var), (mean_want, var_want) in zip(stats, stats_want):
        np.testing.assert_allclose(mean, mean_want, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(var, var_want, rtol=1e-12, atol=1e-13)


def test_the_prefix_runner_follows_inputs_that_change_anywhere():
    """Rows seen before may change in any layer's input, the first one included: run(x) is
    the network's training-mode output on x whatever the last run was."""
    from snnvae.latent.bernoulli import _PrefixNetwork
    model, twin = tiny_model(seed=3).train(), tiny_model(seed=3).train()
    rng = np.random.default_rng(6)
    runner = _PrefixNetwork(model.posterior.layers)
    features = 2 * TINY.latent_dim
    x = (rng.random((TINY.timesteps, 5, features)) < 0.4).astype(np.float64)
    with no_grad():
        for t in (2, 3, 5):
            x[:t - 1] = np.where(rng.random(x[:t - 1].shape) < 0.2, 1 - x[:t - 1], x[:t - 1])
            got = runner.run(x[:t].copy())
            want = twin.posterior.layers(Tensor(x[:t].copy())).data
            np.testing.assert_allclose(got, want, rtol=0, atol=0)
    assert 0 < got.mean() < 1


def test_scheduled_sampling_schedule_and_determinism():
    assert FSVAE.scheduled_probability(0, 150) == pytest.approx(0.1)
    assert FSVAE.scheduled_probability(75, 150) == pytest.approx(0.2)
    model = tiny_model(timesteps=8)
    z = (np.random.default_rng(0).random((8, 4, 6)) < 0.5).astype(np.float64)
    plain = model.prior(z).data
    scheduled = [model.prior(z, scheduled_p=1.0, rng=np.random.default_rng(s)).data for s in (1, 1)]
    np.testing.assert_array_equal(scheduled[0], scheduled[1])     # seeded: reproducible
    assert not np.array_equal(plain, scheduled[0])                # inputs z_6, z_7 were replaced
    np.testing.assert_array_equal(model.prior(z, scheduled_p=0.0, rng=np.random.default_rng(1)).data,
                                  plain)                           # p = 0: nothing replaced
    model.eval()
    np.testing.assert_array_equal(model.prior(z, scheduled_p=1.0, rng=np.random.default_rng(1)).data,
                                  model.prior(z).data)             # eval: never scheduled


def test_presets_and_parameter_count():
    assert set(PRESETS) == {"mnist", "fashion", "cifar10", "celeba"}
    model = FSVAE(preset("mnist"), rng=np.random.default_rng(0))
    # REFERENCE: about 4.05 M parameters, posterior 1.52 M, prior 1.48 M
    assert abs(model.num_parameters() - 4.05e6) < 0.03e6
    assert abs(model.posterior.num_parameters() - 1.52e6) < 0.02e6
    assert abs(model.prior.num_parameters() - 1.48e6) < 0.02e6
    celeba = preset("celeba")
    assert celeba.bottleneck_size == 2 and celeba.in_channels == 3


def test_clear_errors():
    with pytest.raises(ValueError, match="distance must be"):
        FSVAEConfig(distance="l2")
    with pytest.raises(ValueError, match="divisible by 2"):
        FSVAEConfig(input_size=30)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("imagenet")
    model = tiny_model()
    with pytest.raises(ValueError, match=r"expects images of shape \(N, 1, 8, 8\)"):
        model(np.zeros((2, 1, 9, 9)), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="needs rng"):
        model(tiny_images(2))
    with pytest.raises(RuntimeError, match="eval"):
        model.sample(2, np.random.default_rng(0))
