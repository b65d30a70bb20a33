"""Lesson 07: the autoregressive posterior and prior, and stepping them through time.

The two latent networks
    FSVAE's latent is a spike train z_0 .. z_{T-1}, each z_t (N, C) drawn one of k (lesson 06).
    Both distributions over it are autoregressive, and both are spiking networks (three
    spiking linears with tdBN(alpha = 2) and LIF, widths in -> 2C -> 4C -> kC):

        posterior  q(z_t | x_<=t, z_<t):  input at step t = [x_t, z_{t-1}]   (N, 2C)
        prior      p(z_t | z_<t):         input at step t = z_{t-1}          (N, C)
                                          with z_{-1} = 0 in both

    x_t (N, C) are the spikes of the layer before the latent. Nothing feeds z_t back directly
    into step t: the LIF membranes carry the past, so step t depends on x_<=t and z_<t only.
    With time first, the whole input sequence is z_in = (0, z_0, .., z_{T-2}) (T, N, C), i.e.
    z shifted by one step.

Sampling is a loop over time
    z_{t-1} must be drawn before step t can run. The official code does it the simplest way:
    for t = 0 .. T-2, run the network on the whole prefix [x_<=t, z_in_<=t], keep its last
    step, pick z_t, write it into z_in[t+1]. That costs 1 + 2 + .. + T = T (T + 1) / 2 network
    time steps: O(T^2).

Training mode: two passes (the official procedure, reproduced by ``BernoulliPosterior``)
    1. the prefix loop above, without gradient, to draw z_in;
    2. one pass with gradient over the full sequence [x, z_in] gives q_z (T, N, C, k); the
       returned z = pick(q_z) with the SAME picks as in pass 1, plus a fresh pick at T-1.
    In training mode tdBN normalises with the statistics of the tensor it is given, pooled over
    time, batch and features' samples (lesson 04). A prefix of length t+1 has other statistics
    than the full sequence of length T, so the spikes q_t of the prefix loop and the spikes
    q_z[t] of the full pass can differ, and then z[t] (what the decoder and the prior get) is
    not the z_in[t+1] that the posterior was fed. The official code also lets every prefix call
    update the running statistics: T calls per forward instead of one
    (``FSVAEConfig(prefix_updates_bn=False)`` turns that quirk off).

Eval mode: incremental and exact
    With running statistics, tdBN is a fixed affine map per feature, the same at every step and
    for every sequence length. Every layer is then causal and the only state is each LIF
    neuron's (u, o). Running the prefix and keeping the last step therefore equals stepping
    once from the carried state (the same spikes; a step's linear sums may add in another
    order, so in float32 a membrane can differ in its last bit):

        spikes_t, state_t = layer.step(input_t, state_{t-1})       (per layer, O(1) per step)

    ``prior.sample`` generates this way in O(T); ``prior.sample_by_prefix`` is the official
    O(T^2) loop; the eval-mode posterior steps the same way.

Running statistics must be real
    A fresh model has running mean 0 and variance 1. The prior's first input is z_{-1} = 0, so
    its first layer sees only its bias, |b| <= 1/sqrt(C), scaled by alpha Vth = 0.4: the
    membrane never exceeds 0.4 / sqrt(C) / (1 - tau) < Vth for C >= 8, and the eval-mode prior
    is silent forever. Before comparing eval-mode paths the lesson stores real statistics with
    one training call at momentum 1 (as lesson 05 and the tests do).

What this lesson checks (exit status 1 if any fails):
  * training mode: the two-pass posterior written out by hand equals ``model.posterior``;
  * training mode: the first layer's tdBN batch statistics of each prefix differ from the full
    pass, prefix spikes differ from the full pass's, and some fed-back z_in[t+1] differ from
    the returned z[t]; the running statistics are updated T times per forward;
  * eval mode: the untrained prior is silent before the warm-up and fires after it;
  * eval mode: the stepped posterior equals the prefix loop, and z fed back = z returned;
  * eval mode: ``prior.sample`` (O(T)) == ``prior.sample_by_prefix`` (O(T^2)) for every T
    tried, and ``model.sample`` gives the same images both ways;
  * cost: the first prior layer evaluates exactly T time steps incrementally and
    T (T + 1) / 2 by prefixes (counted); wall-clock times are printed and plotted.

A note on timing. The matrices here are tiny, and a multi-threaded BLAS splits even a 64 x 32
product over its threads. On a busy two-core machine the second thread is often not running,
and each product then waits for it: measured here, ``prior.sample`` took 520 ms instead of
8 ms. The lesson therefore asks OpenBLAS for one thread (``OPENBLAS_NUM_THREADS=1``, set before
NumPy loads; a value you export yourself wins), so that the times show the algorithm.

Figures: ``07_prefix_vs_full.png`` (prefix statistics and spike mismatches, training vs eval)
and ``07_generation_cost.png`` (time and counted steps against T).

Run:  python lessons/07_autoregressive_posterior_and_prior.py [--fast] [--out DIR] [--seed S]
"""
from __future__ import annotations

import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # before NumPy loads; see the docstring

import numpy as np

from _common import Checker, banner, parse_args, plt, save_figure, section, table

from snnvae import Tensor, data, nn, no_grad
from snnvae.latent import BernoulliPrior, RandomPicks, ReplayPicks
from snnvae.models import FSVAE, FSVAEConfig


def prefix_loop(posterior, x, picks):
    """The official first pass, written out: returns the prefix spikes q_t (T-1, N, C, k) and
    the fed-back inputs z_in (T, N, C) = (0, z_0, .., z_{T-2})."""
    T, N, C = x.shape
    z_in = np.zeros((T, N, C), dtype=x.dtype)
    q_prefix = []
    with no_grad():
        for t in range(T - 1):
            q_t = posterior.spikes(x[:t + 1], Tensor(z_in[:t + 1])).data[t]      # last step only
            q_prefix.append(q_t)
            z_in[t + 1] = np.take_along_axis(q_t, picks[t][..., None], axis=-1)[..., 0]
    return np.stack(q_prefix), z_in


def first_layer_stats(posterior, x, z_in, length):
    """Batch mean and variance per feature of the first posterior layer's pre-activations
    (what tdBN normalises with in training mode) for the prefix of the given length."""
    layer = posterior.layers[0]
    with no_grad():
        h = nn.Linear.forward(layer, Tensor(np.concatenate([x.data[:length], z_in[:length]], -1)))
    h = h.data.reshape(-1, h.shape[-1])
    return h.mean(axis=0), h.var(axis=0)


def warm_up(model, images, rng):
    """One training-mode call at momentum 1: the running statistics become this batch's."""
    nn.calibrate_running_statistics(model, lambda: model(images, rng=rng))


class StepCounter:
    """Counts the time steps a layer evaluates, through ``forward`` (T' steps at once) and
    ``step`` (one), by wrapping the two methods of this one instance."""

    def __init__(self, layer):
        self.layer, self.steps = layer, 0
        forward, step = layer.forward, layer.step

        def counted_forward(x):
            self.steps += x.shape[0]
            return forward(x)

        def counted_step(x_t, state=None):
            self.steps += 1
            return step(x_t, state)

        layer.forward, layer.step = counted_forward, counted_step

    def remove(self):
        del self.layer.forward, self.layer.step


def main():
    args = parse_args(__doc__)
    rng = np.random.default_rng(args.seed)
    chk = Checker("lesson 07")
    banner("Lesson 07: the autoregressive posterior and prior")

    cfg = FSVAEConfig(hidden_channels=(8, 16), input_size=16, latent_dim=16, k=5, timesteps=8)
    T, C, K = cfg.timesteps, cfg.latent_dim, cfg.k
    N = 32 if args.fast else 128
    model = FSVAE(cfg, rng=np.random.default_rng(args.seed), dtype=np.float32)
    train_u8, _ = data.load_embedded_mnist("train")
    images = data.prepare_images(train_u8[rng.choice(len(train_u8), N, replace=False)],
                                 size=cfg.input_size)
    post = model.posterior

    # -----------------------------------------------------------------------------------------
    section("1. training mode: the official two passes, by hand")
    with no_grad():
        x = model.encode(images)                               # (T, N, C) spikes
    picks = rng.integers(0, K, size=(T, N, C))
    print(f"  x {x.shape} (firing rate {x.data.mean():.3f}), latent C = {C}, k = {K}, T = {T}")
    q_prefix, z_in = prefix_loop(post, x, picks)
    with no_grad():
        q_full = post.spikes(x, Tensor(z_in)).data               # pass 2: the whole sequence
    z_hand = np.take_along_axis(q_full, picks[..., None], axis=-1)[..., 0]
    nbt0 = int(post.layers[0].bn.num_batches_tracked)
    with no_grad():
        q_lib, z_lib = post(x, ReplayPicks(picks))
    updates = int(post.layers[0].bn.num_batches_tracked) - nbt0
    chk.equal("model.posterior (training) == prefix loop + full pass by hand: q_z",
              q_lib.data, q_full)
    chk.equal("... and z = pick(q_z) with the same picks (fresh one at t = T-1)", z_lib.data, z_hand)
    chk.check(f"the running statistics are updated T = {T} times per forward (T-1 prefixes + 1)",
              updates == T, f"{updates} updates")

    section("2. training mode: a prefix is normalised differently from the full sequence")
    mu_T, var_T = first_layer_stats(post, x, z_in, T)
    rows, mean_gap, std_ratio = [], [], []
    for length in range(1, T + 1):
        mu_L, var_L = first_layer_stats(post, x, z_in, length)
        mean_gap.append(np.mean(np.abs(mu_L - mu_T) / np.sqrt(var_T + 1e-5)))
        std_ratio.append(np.mean(np.sqrt(var_L + 1e-5) / np.sqrt(var_T + 1e-5)))
        if length in (1, 2, T // 2, T):
            rows.append([length, f"{mean_gap[-1]:.3f}", f"{std_ratio[-1]:.3f}"])
    table(rows, ["prefix length", "mean |mu_L - mu_T| / sigma_T", "mean sigma_L / sigma_T"])
    chk.check("first posterior layer: the batch mean of the 1-step prefix differs from the "
              "full pass's", mean_gap[0] > 1e-3, f"{mean_gap[0]:.3f} sigma on average")
    diff_train = np.array([(q_prefix[t] != q_full[t]).mean() for t in range(T - 1)])
    mismatch_train = np.array([(z_lib.data[t] != z_in[t + 1]).mean() for t in range(T - 1)])
    print("  fraction of posterior spikes q_t (prefix loop) != q_z[t] (full pass), t = 0..T-2:")
    print("   ", np.round(diff_train, 3))
    print("  fraction of returned z[t] != fed-back z_in[t+1]:")
    print("   ", np.round(mismatch_train, 3))
    chk.check("training mode: some prefix-loop spikes differ from the full pass",
              diff_train.sum() > 0, f"{diff_train.mean():.1%} on average")
    chk.check("training mode: some returned z[t] differ from the z_in[t+1] the posterior was fed",
              mismatch_train.sum() > 0, f"{mismatch_train.mean():.1%} on average")

    # -----------------------------------------------------------------------------------------
    section("3. eval mode: running statistics make the prefix loop incremental")
    model.eval()
    silent = model.prior.sample(N, T, RandomPicks(K, np.random.default_rng(1)))
    print(f"  before the warm-up (running mean 0, variance 1): prior samples fire at "
          f"{silent.mean():.3f}")
    chk.check("untrained running statistics: the eval-mode prior never fires", silent.sum() == 0)
    model.train()
    warm_up(model, images, np.random.default_rng(args.seed + 1))
    model.eval()
    with no_grad():
        x = model.encode(images)
    q_prefix_ev, z_in_ev = prefix_loop(post, x, picks)
    with no_grad():
        q_ev, z_ev = post(x, ReplayPicks(picks))              # steps t = 0..T-2 incrementally
        q_full_ev = post.spikes(x, Tensor(z_in_ev)).data
    chk.equal("eval: stepped posterior == prefix loop (q_z)", q_ev.data, q_full_ev)
    chk.equal("eval: prefix spikes q_t == full-pass q_z[t] at every step",
              q_prefix_ev, q_full_ev[:T - 1])
    chk.equal("eval: the returned z[t] is the z_in[t+1] that was fed back", z_ev.data[:T - 1],
              z_in_ev[1:])
    diff_eval = np.array([(q_prefix_ev[t] != q_full_ev[t]).mean() for t in range(T - 1)])

    picks_seed = args.seed + 7
    fast = model.prior.sample(N, T, RandomPicks(K, np.random.default_rng(picks_seed)))
    slow = model.prior.sample_by_prefix(N, T, RandomPicks(K, np.random.default_rng(picks_seed)))
    print(f"  warmed-up prior: samples fire at {fast.mean():.3f}")
    chk.check("after the warm-up the eval prior fires (0 < rate < 1)", 0 < fast.mean() < 1,
              f"{fast.mean():.3f}")
    chk.equal("eval: prior.sample (O(T)) == prior.sample_by_prefix (O(T^2)), bit for bit",
              fast, slow)
    img_fast = model.sample(8, np.random.default_rng(3), incremental=True)
    img_slow = model.sample(8, np.random.default_rng(3), incremental=False)
    chk.equal("model.sample: incremental and prefix generation give the same images",
              img_fast, img_slow)

    # -----------------------------------------------------------------------------------------
    section("4. the cost of generation: O(T) against O(T^2)")
    # A wider prior than the toy model's so that the work, not Python, dominates.
    Cg, Kg, n_gen = (32, 10, 64) if args.fast else (32, 10, 128)
    prior = BernoulliPrior(Cg, Kg, rng=np.random.default_rng(args.seed + 2))
    nn.calibrate_running_statistics(    # store real statistics
        prior, lambda: prior((rng.random((8, 256, Cg)) < 0.3).astype(np.float32)))
    prior.eval()
    Ts = (4, 8, 16, 32) if args.fast else (4, 8, 16, 32, 64)
    repeats = 2 if args.fast else 3
    times, counted, rows, all_equal = {"sample": [], "sample_by_prefix": []}, [], [], True
    for Tg in Ts:
        results = {}
        for name in times:
            method = getattr(prior, name)
            counter = StepCounter(prior.layers[0])
            results[name] = method(n_gen, Tg, RandomPicks(Kg, np.random.default_rng(Tg)))
            counter.remove()
            best = np.inf
            for _ in range(repeats):
                start = time.perf_counter()
                method(n_gen, Tg, RandomPicks(Kg, np.random.default_rng(Tg)))
                best = min(best, time.perf_counter() - start)
            times[name].append(best)
            counted.append((Tg, name, counter.steps))
        all_equal &= np.array_equal(results["sample"], results["sample_by_prefix"])
        steps_inc = [c for t_, n_, c in counted if t_ == Tg and n_ == "sample"][0]
        steps_pre = [c for t_, n_, c in counted if t_ == Tg and n_ == "sample_by_prefix"][0]
        rows.append([Tg, steps_inc, steps_pre, f"{1e3 * times['sample'][-1]:.1f}",
                     f"{1e3 * times['sample_by_prefix'][-1]:.1f}",
                     f"{results['sample'].mean():.3f}"])
    print(f"  prior C = {Cg}, k = {Kg}, {n_gen} samples; best of {repeats} runs")
    table(rows, ["T", "steps (incr.)", "steps (prefix)", "ms incremental", "ms prefix", "rate"])
    chk.check(f"incremental == prefix generation for every T in {Ts}", all_equal)
    ok = all(c == (Tg if name == "sample" else Tg * (Tg + 1) // 2) for Tg, name, c in counted)
    chk.check("first prior layer evaluates T steps incrementally and T(T+1)/2 by prefixes", ok,
              ", ".join(f"T={Tg} {name}: {c}" for Tg, name, c in counted if Tg == Ts[-1]))
    slope = {name: np.polyfit(np.log(Ts[1:]), np.log(v[1:]), 1)[0] for name, v in times.items()}
    print(f"  log-log slope of the measured times over T = {Ts[1]}..{Ts[-1]}: incremental "
          f"{slope['sample']:.2f}, prefix {slope['sample_by_prefix']:.2f} (the work grows with "
          f"slopes 1 and 2; fixed costs per step flatten the prefix curve at small T)")
    print(f"  BLAS threads: OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")

    # -----------------------------------------------------------------------------------------
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    lengths = np.arange(1, T + 1)
    ax1.plot(lengths, mean_gap, "o-", label="mean |mu_L - mu_T| / sigma_T")
    ax1.plot(lengths, std_ratio, "s-", label="mean sigma_L / sigma_T")
    ax1.axhline(1, color="gray", lw=0.8, ls=":")
    ax1.axhline(0, color="gray", lw=0.8, ls=":")
    ax1.set(xlabel="prefix length L", ylabel="relative to the full pass (L = T)",
            title="training mode: tdBN statistics of the first posterior layer")
    ax1.legend(fontsize=8)
    steps = np.arange(T - 1)
    ax2.bar(steps - 0.3, diff_train, 0.3, label="training: q_t (prefix) != q_z[t] (full)")
    ax2.bar(steps, mismatch_train, 0.3, label="training: z[t] != fed-back z_in[t+1]")
    ax2.bar(steps + 0.3, diff_eval, 0.3, label="eval: both (exactly 0)")
    ax2.set(xlabel="step t", ylabel="fraction of spikes that differ",
            title="the prefix loop vs the full pass")
    ax2.legend(fontsize=8)
    save_figure(fig, args.out, "07_prefix_vs_full.png")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    for name, style in (("sample", "o-"), ("sample_by_prefix", "s-")):
        ax1.loglog(Ts, 1e3 * np.array(times[name]), style, label=f"prior.{name}")
    ref = np.array(Ts, dtype=float)
    t0 = 1e3 * times["sample_by_prefix"][0]
    ax1.loglog(Ts, t0 * ref / ref[0], "k:", lw=1, label="slope 1")
    ax1.loglog(Ts, t0 * (ref / ref[0]) ** 2, "k--", lw=1, label="slope 2")
    ax1.set_xticks(Ts, [str(t) for t in Ts])
    ax1.minorticks_off()
    ax1.set(xlabel="time steps T", ylabel="ms (best of runs)",
            title=f"generating {n_gen} latent trains, C = {Cg}, k = {Kg}")
    ax1.legend(fontsize=8)
    for name, style in (("sample", "o-"), ("sample_by_prefix", "s-")):
        ax2.loglog(Ts, [c for t_, n_, c in counted if n_ == name], style, label=f"prior.{name}")
    ax2.set_xticks(Ts, [str(t) for t in Ts])
    ax2.minorticks_off()
    ax2.set(xlabel="time steps T", ylabel="time steps evaluated by the first layer",
            title="counted work: T against T(T+1)/2")
    ax2.legend(fontsize=8)
    save_figure(fig, args.out, "07_generation_cost.png")

    chk.finish()


if __name__ == "__main__":
    main()
