"""Lesson 06: FSVAE's Bernoulli latent and the one-of-k pick.

Why a new latent
    A Gaussian VAE samples z = mu + sigma * eps, a real number. A *fully* spiking VAE needs its
    latent to be spikes too, z_t in {0, 1}, and still random, so that the decoder learns to
    turn samples of a distribution into images. FSVAE makes a spiking network emit k spikes per
    latent channel at every step and picks one of them at random.

Shapes (time first, as everywhere in ``snnvae``)
    The last layer of the posterior network has k * C LIF neurons. At step t its output
    (N, k C) is viewed as C groups of k consecutive neurons, channel-major:

        q_z[t, n, c, j] = output[t, n, c * k + j]        q_z: (T, N, C, k)

    For each (t, n, c) an index j* is drawn uniformly from {0, .., k-1}, independently of
    everything else, and

        z[t, n, c] = q_z[t, n, c, j*]                     z:   (T, N, C)

The pick is a Bernoulli draw
    Given the group's spikes q_1..q_k (each 0 or 1), with m = sum_j q_j of them firing,

        P(z = 1) = sum_j P(j* = j) q_j = (1/k) sum_j q_j = m / k =: r

    So z is a Bernoulli(r) variable whose probability r = mean_k q_z is the group's firing
    fraction: a probability quantised to the k + 1 levels 0, 1/k, .., 1 (k = 20 in the paper).
    Only the count matters, not which neurons fired. The posterior and the prior are compared
    through these rates r (lesson 08); mean r, variance r (1 - r).

The gradient through the pick
    With the pick held fixed, z = sum_j 1[j = j*] q_j is a plain selection, so

        dz / dq_j = 1[j = j*]

    The chosen spike receives the whole gradient, the k - 1 others none, and from there BPTT
    carries it through the posterior's LIF neurons with the surrogate window (lesson 02). The
    randomness (j*) does not depend on the parameters: this is the reparameterisation trick
    with "pick an index" in place of "add Gaussian noise". Averaged over picks,
    E[dz/dq_j] = 1/k = dr/dq_j: the single-pick gradient is an unbiased estimate of the rate's.

In ``snnvae``: ``snnvae.latent.pick_one_of_k(q_t, picks)`` does the selection (a ``gather``
along the last axis), ``RandomPicks(k, rng).draw(t, N, C)`` draws the indices and
``ReplayPicks(picks)`` replays recorded ones, so that a run can be repeated pick for pick.

What this lesson checks (exit status 1 if any fails):
  * the channel-major grouping and a pick worked out by hand;
  * over many draws, the frequency of z = 1 matches m / k for every m = 0..k, within 4.5
    binomial standard deviations sqrt(r (1 - r) / n) (exactly 0 and 1 at the ends);
  * the position of the spikes inside a group does not matter, only their count;
  * picks are uniform over the k members, and z of two channels are independent
    (P(z_a = z_b = 1) = r_a r_b);
  * the gradient of sum_c w_c z_c goes to the chosen spike only, with value w_c (by hand);
  * averaged over picks, the gradient reaching each member is 1/k (unbiased);
  * inside a real FSVAE forward pass: z is exactly q_z at the replayed picks, binary, and at
    the last step (whose pick q_z never saw) its mean matches the mean posterior rate within
    the binomial tolerance.

Figures: ``06_rates_vs_frequencies.png`` (m / k against the measured frequency of z = 1,
uniformity of the picks) and ``06_posterior_raster.png`` (the k C posterior spikes of one
digit, grouped per channel, with the picked one marked, and the resulting z raster).

Run:  python lessons/06_bernoulli_latent_and_one_of_k.py [--fast] [--out DIR] [--seed S]
"""
from __future__ import annotations

import numpy as np

from _common import Checker, banner, parse_args, plt, save_figure, section, table

from snnvae import Tensor, data
from snnvae.latent import RandomPicks, ReplayPicks, pick_one_of_k
from snnvae.models import FSVAE, FSVAEConfig

Z_SIGMAS = 4.5   # tolerance of every frequency check, in binomial standard deviations


def binomial_sigma(p, n):
    """Standard deviation of the frequency of successes in n independent Bernoulli(p) draws."""
    return np.sqrt(p * (1 - p) / n)


def draw_many(q_groups, n_draws, rng, chunk=20000):
    """Pick one of k in each of G groups (q_groups (G, k)), n_draws times.
    Returns z (n_draws, G) and the picks (n_draws, G)."""
    G, k = q_groups.shape
    picker = RandomPicks(k, rng)
    zs, picks = [], []
    for start in range(0, n_draws, chunk):
        n = min(chunk, n_draws - start)
        p = picker.draw(0, n, G)                                # (n, G) ints in [0, k)
        q = np.broadcast_to(q_groups, (n, G, k))
        zs.append(pick_one_of_k(Tensor(np.ascontiguousarray(q)), p).data)
        picks.append(p)
    return np.concatenate(zs), np.concatenate(picks)


def main():
    args = parse_args(__doc__)
    rng = np.random.default_rng(args.seed)
    chk = Checker("lesson 06")
    banner("Lesson 06: the Bernoulli latent and the one-of-k pick")

    # -----------------------------------------------------------------------------------------
    section("1. grouping and picking, by hand")
    # One step, one sample, C = 2 channels, k = 4: the last layer has 8 neurons.
    out = np.array([[1, 0, 1, 1, 0, 0, 1, 0]], dtype=np.float64)     # (N = 1, k C = 8)
    q = out.reshape(1, 2, 4)                                         # (N, C, k), channel-major
    print(f"  last layer (N=1, kC=8): {out[0].astype(int)}")
    print(f"  grouped (C=2, k=4):     channel 0 {q[0, 0].astype(int)}, channel 1 {q[0, 1].astype(int)}")
    print(f"  rates r = m / k:        {q.mean(axis=-1)[0]}  (3 of 4, 1 of 4)")
    chk.equal("channel c holds neurons c*k .. c*k + k-1 (channel-major grouping)",
              q[0, 1], out[0, 4:8])
    picks = np.array([[1, 2]])                                       # j* = 1 and 2
    z = pick_one_of_k(Tensor(q), picks).data
    print(f"  picks j* = {picks[0]} -> z = {z[0]}  (q[0,0,1] = 0, q[0,1,2] = 1)")
    chk.equal("z = q[n, c, j*]: picks (1, 2) give z = (0, 1)", z, [[0.0, 1.0]])

    # -----------------------------------------------------------------------------------------
    section("2. z is Bernoulli(m / k): every spike count m = 0..k")
    k = 10
    n_draws = 40_000 if args.fast else 400_000
    # Group m has its m spikes at random positions; two extra groups hold the same count (4)
    # at other positions, to show that only the count matters.
    groups = np.zeros((k + 3, k))
    for m in range(k + 1):
        groups[m, rng.permutation(k)[:m]] = 1
    groups[k + 1, :4] = 1                     # 4 spikes at the front
    groups[k + 2, -4:] = 1                    # 4 spikes at the back
    rates = groups.mean(axis=1)
    z, picks = draw_many(groups, n_draws, rng)
    freq = z.mean(axis=0)
    sigma = binomial_sigma(rates, n_draws)
    rows = []
    for g in range(len(groups)):
        dev = "exact" if sigma[g] == 0 else f"{(freq[g] - rates[g]) / sigma[g]:+.2f}"
        label = str(int(groups[g].sum())) + ("  (front)" if g == k + 1 else
                                             "  (back)" if g == k + 2 else "")
        rows.append([label, "".join(str(int(v)) for v in groups[g]), f"{rates[g]:.1f}",
                     f"{freq[g]:.4f}", f"{sigma[g]:.4f}", dev])
    print(f"  k = {k}, {n_draws:,} independent picks per group")
    table(rows, ["m", "group spikes", "r = m/k", "freq(z=1)", "sigma", "(freq - r)/sigma"])
    inner = (rates > 0) & (rates < 1)
    worst = np.max(np.abs(freq[inner] - rates[inner]) / sigma[inner])
    chk.check(f"freq(z = 1) = m/k within {Z_SIGMAS} binomial sigmas for m = 1..{k - 1}",
              worst <= Z_SIGMAS, f"worst deviation {worst:.2f} sigma")
    chk.check("m = 0 never gives z = 1 and m = k always does",
              freq[0] == 0.0 and freq[k] == 1.0, f"{freq[0]}, {freq[k]}")
    gap = abs(freq[k + 1] - freq[k + 2])
    chk.check("only the count matters: 4 spikes in front or at the back, same frequency",
              gap <= Z_SIGMAS * np.sqrt(2) * sigma[k + 1],
              f"{freq[k + 1]:.4f} vs {freq[k + 2]:.4f}")

    # Uniform picks: each member is chosen with probability 1/k.
    counts = np.bincount(picks.ravel(), minlength=k)
    pick_freq = counts / picks.size
    pick_sigma = binomial_sigma(1 / k, picks.size)
    worst_pick = np.max(np.abs(pick_freq - 1 / k)) / pick_sigma
    print(f"  member chosen, frequencies over {picks.size:,} picks: {np.round(pick_freq, 4)}")
    chk.check(f"picks are uniform over the k = {k} members (within {Z_SIGMAS} sigma)",
              worst_pick <= Z_SIGMAS, f"worst deviation {worst_pick:.2f} sigma")
    # Independence of channels: z_a, z_b for r_a = 0.3 and r_b = 0.6.
    a, b = 3, 6
    joint = np.mean(z[:, a] * z[:, b])
    expect = rates[a] * rates[b]
    dev = abs(joint - expect) / binomial_sigma(expect, n_draws)
    print(f"  P(z_a = 1, z_b = 1) for r_a = {rates[a]}, r_b = {rates[b]}: {joint:.4f} "
          f"(independent: {expect:.4f})")
    chk.check("two channels pick independently: P(z_a = z_b = 1) = r_a r_b",
              dev <= Z_SIGMAS, f"{dev:.2f} sigma")

    # -----------------------------------------------------------------------------------------
    section("3. the gradient through the pick, by hand")
    # L = sum_{n,c} w[n,c] z[n,c] with z[n,c] = q[n,c,j*]: dL/dq[n,c,j] = w[n,c] 1[j = j*].
    q3 = Tensor(rng.uniform(size=(2, 3, 4)), requires_grad=True)
    p3 = np.array([[0, 3, 1], [2, 2, 0]])
    w3 = np.array([[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]])
    (pick_one_of_k(q3, p3) * Tensor(w3)).sum().backward()
    expected = np.zeros((2, 3, 4))
    for n in range(2):
        for c in range(3):
            expected[n, c, p3[n, c]] = w3[n, c]
    print(f"  picks {p3.tolist()}, weights {w3.tolist()}")
    print(f"  dL/dq[0, 1, :] = {q3.grad[0, 1]}  (only member 3 gets w = -2)")
    chk.equal("dL/dq = w at the chosen member, 0 at the k - 1 others", q3.grad, expected)
    chk.equal("exactly one member per group receives gradient",
              (q3.grad != 0).sum(axis=-1), np.ones((2, 3), dtype=int))
    # Averaged over picks the gradient per member is 1/k: an unbiased estimate of dr/dq_j.
    n_avg = 20_000 if args.fast else 200_000
    k4 = 5
    q4 = Tensor(np.tile(np.array([1.0, 0, 1, 1, 0]), (n_avg, 1, 1)), requires_grad=True)
    pick_one_of_k(q4, RandomPicks(k4, rng).draw(0, n_avg, 1)).sum().backward()
    mean_grad = q4.grad.mean(axis=(0, 1))
    dev = np.max(np.abs(mean_grad - 1 / k4)) / binomial_sigma(1 / k4, n_avg)
    print(f"  k = {k4}: mean gradient per member over {n_avg:,} picks: {np.round(mean_grad, 4)}"
          f"  (dr/dq_j = 1/k = {1 / k4})")
    chk.check(f"E[dz/dq_j] = 1/k for every member (within {Z_SIGMAS} sigma)",
              dev <= Z_SIGMAS, f"worst deviation {dev:.2f} sigma")

    # -----------------------------------------------------------------------------------------
    section("4. inside FSVAE: q_z, the picks and z on real digits")
    cfg = FSVAEConfig(hidden_channels=(8, 16), input_size=16, latent_dim=8, k=5,
                      timesteps=8 if args.fast else 12)
    model = FSVAE(cfg, rng=np.random.default_rng(args.seed), dtype=np.float32)
    test_u8, labels = data.load_embedded_mnist("test")
    n_img = 128 if args.fast else 512
    images = data.prepare_images(test_u8[:n_img], size=cfg.input_size)
    T, C, K = cfg.timesteps, cfg.latent_dim, cfg.k
    recorded = rng.integers(0, K, size=(T, n_img, C))
    out = model(images, picker=ReplayPicks(recorded))          # training mode, untrained model
    q_z, z_m = out.q_z.data, out.z.data
    print(f"  {cfg.hidden_channels} encoder on {cfg.input_size}x{cfg.input_size} digits, latent "
          f"C = {C}, k = {K}, T = {T}: q_z {q_z.shape}, z {z_m.shape}")
    chk.equal("z[t, n, c] = q_z[t, n, c, j*] with the replayed picks, at every step",
              z_m, np.take_along_axis(q_z, recorded[..., None], axis=-1)[..., 0])
    chk.check("q_z and z are spikes (0 or 1)",
              np.all((q_z == 0) | (q_z == 1)) and np.all((z_m == 0) | (z_m == 1)))
    r_m = q_z.mean(axis=-1)                                    # (T, N, C) posterior rates
    # Given q_z, the LAST step's picks are fresh: q_z was computed from z_0..z_{T-2} (and thus
    # from the earlier picks), never from the pick at T-1. So z[T-1] is a sum of independent
    # Bernoulli(r) draws given q_z; its mean has variance sum r (1 - r) / count^2.
    r_last, z_last = r_m[-1], z_m[-1]
    tol = Z_SIGMAS * np.sqrt(np.sum(r_last * (1 - r_last))) / r_last.size
    gap = abs(z_last.mean() - r_last.mean())
    print(f"  last step: mean posterior rate {r_last.mean():.4f}, mean z {z_last.mean():.4f} "
          f"(tolerance {tol:.4f}); rate levels used: {np.unique(r_m).round(2)}")
    chk.check("last step: mean of z matches the mean rate mean_k q_z (4.5 sigma)",
              gap <= tol, f"|diff| {gap:.4f}")
    chk.check("the untrained posterior fires, but not always (0 < rate < 1)",
              0 < r_m.mean() < 1, f"{r_m.mean():.3f}")

    # -----------------------------------------------------------------------------------------
    fig, (ax1, ax3, ax2) = plt.subplots(1, 3, figsize=(15, 4))
    ax1.plot([0, 1], [0, 1], "k:", lw=1, label="P(z = 1) = m / k")
    ax1.plot(rates[:k + 1], freq[:k + 1], "o", ms=5, label=f"measured ({n_draws:,} picks)")
    ax1.set(xlabel="rate r = (spikes in the group) / k", ylabel="frequency of z = 1",
            title=f"one of k = {k} picked uniformly: z ~ Bernoulli(m / k)")
    ax1.legend(fontsize=8)
    dev_sigma = np.where(sigma > 0, (freq - rates) / np.where(sigma > 0, sigma, 1), 0.0)
    ax3.axhspan(-Z_SIGMAS, Z_SIGMAS, color="gray", alpha=0.2, label=f"+- {Z_SIGMAS} sigma")
    ax3.plot(rates[:k + 1], dev_sigma[:k + 1], "o", ms=5, label="m spikes at random places")
    ax3.plot(rates[k + 1:], dev_sigma[k + 1:], "s", mfc="none", ms=7,
             label="4 spikes at the front / back")
    ax3.axhline(0, color="k", lw=0.8)
    ax3.set(xlabel="rate r = m / k", ylabel="(freq - r) / sigma",
            title="deviation in binomial sigmas sqrt(r(1-r)/n)", ylim=(-6, 6))
    ax3.legend(fontsize=8)
    ax2.bar(np.arange(k), pick_freq - 1 / k, color="C1")
    ax2.axhspan(-Z_SIGMAS * pick_sigma, Z_SIGMAS * pick_sigma, color="gray", alpha=0.2,
                label=f"+- {Z_SIGMAS} sigma")
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set(xlabel="member j of the group", ylabel="freq(j* = j) - 1/k",
            title="the pick is uniform over the members")
    ax2.legend(fontsize=8)
    save_figure(fig, args.out, "06_rates_vs_frequencies.png")

    n_show = 0
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 9), sharex=True,
                                   gridspec_kw=dict(height_ratios=[C * K, 2.5 * C]))
    raster = q_z[:, n_show].reshape(T, C * K).T                # rows: neuron c*k + j
    ax1.imshow(raster, aspect="auto", cmap="Greys", vmin=0, vmax=1.6, interpolation="nearest")
    for c in range(1, C):
        ax1.axhline(c * K - 0.5, color="C0", lw=0.8)
    rows_picked = np.arange(C)[None, :] * K + recorded[:, n_show]          # (T, C)
    tt = np.repeat(np.arange(T), C)
    fired = raster[rows_picked.ravel(), tt] > 0
    ax1.scatter(tt[fired], rows_picked.ravel()[fired], s=60, facecolors="none",
                edgecolors="C3", lw=1.5)
    ax1.scatter(tt[~fired], rows_picked.ravel()[~fired], s=60, marker="x", color="C3", lw=1)
    ax1.set_yticks(np.arange(C) * K + (K - 1) / 2, [f"c={c}" for c in range(C)])
    ax1.set(ylabel=f"posterior neurons, {C} groups of k = {K}",
            title=f"q_z of digit {labels[n_show]} (grey: spike) and one pick per group and "
                  f"step\n(circle: the pick hit a spike, z = 1; cross: it hit silence, z = 0)")
    ax2.imshow(np.stack([r_m[:, n_show].T, z_m[:, n_show].T], axis=1).reshape(2 * C, T),
               aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax2.set_yticks(np.arange(2 * C), [f"{'r' if i % 2 == 0 else 'z'} c={i // 2}"
                                      for i in range(2 * C)], fontsize=7)
    ax2.set(xlabel="time step t", title="rate r = m/k (rows r) and the sampled z (rows z)")
    save_figure(fig, args.out, "06_posterior_raster.png")

    chk.finish()


if __name__ == "__main__":
    main()
