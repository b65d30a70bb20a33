"""Lesson 10: Poisson spike sampling (ESVAE) and why it is reparameterisable.

A latent made of rates
    FSVAE's latent (lessons 06-07) is an autoregressive spiking network whose k spikes per
    channel are sampled by picking one. ESVAE (Zhan et al., 2023) keeps FSVAE's encoder and
    decoder but makes the latent much simpler. The encoder's last spiking layer x (T, N, C) is
    averaged over time into a firing rate per sample and channel,

        r = (1/T) sum_t x_t          r: (N, C), values in {0, 1/T, .., 1}

    and the latent spikes are drawn afresh from those rates at every step:

        z_t = 1[r > U_t],   U_t ~ Uniform(0, 1) independently       z: (T, N, C)

    so P(z_t = 1) = P(U_t < r) = r and the spike count n = sum_t z_t is Binomial(T, r), with
    mean T r and variance T r (1 - r). (Many steps of a Bernoulli(r) process approximate a
    Poisson process of rate r: hence the name.)

Why it is reparameterisable
    The randomness U does not depend on r: z = g(r, U) is a deterministic function of the
    parameter and of noise drawn independently of it. That is the reparameterisation trick
    (a Gaussian VAE writes z = mu + sigma eps). For a fixed U we can differentiate along the
    sample path, z as a function of r, and average over U to estimate dE[.]/dr.

    But g is a step: dz_t/dr = 0 for every r != U_t. The exact pathwise derivative is 0 almost
    surely, while dE[n]/dr = d(T r)/dr = T. The step hides its whole derivative in a Dirac
    delta at r = U_t (which finite differences with the SAME U do see: moving r by +-h flips
    z_t exactly when U_t lies in (r - h, r + h], probability 2h, so E[(n(r+h) - n(r-h)) / 2h]
    = T). ESVAE replaces the delta by a box, as for the LIF spike (lesson 02):

        dz_t/dr := 1[|r - U_t| < aa] / (2 aa),         aa = 0.5   (a box of width 1, height 1)

    Averaged over U ~ U(0, 1) the surrogate gives

        E_U[dn/dr] = T * P(|r - U| < 1/2) = T * (min(r + 1/2, 1) - max(r - 1/2, 0))

    T at r = 1/2 (the box covers all of (0, 1)) and falling linearly to T/2 at r = 0 and 1: a
    biased but always positive estimate of the true T. It is the exact derivative of the
    expected smooth stand-in h(r - U) = clip(r - U + 1/2, 0, 1), which snnvae uses for finite
    differences (``spike_mode("smooth")``). Because the sign is right, gradient descent through
    the sampler still settles where E[z] meets its target (section 5).

In ``snnvae``: ``snnvae.latent.poisson_spikes(rates, uniforms)`` (rates broadcast over the
leading T axis of the uniforms; the gradient sums over T), ``draw_uniforms(rng, shape)``,
``sample_poisson_spikes(rates, T, rng)`` and the model ``snnvae.models.ESVAE``, whose
``posterior_rates`` is the mean over T above.

What this lesson checks (exit status 1 if any fails):
  * sampling and the surrogate gradient on a small example by hand;
  * for rates on a grid: the frequency of z_t = 1 matches r, the mean and variance of the count
    match T r and T r (1 - r) (within 4.5 standard errors), uniforms are fresh at each step;
  * the exact pathwise derivative is 0, and finite differences of the count with common
    uniforms estimate dE[n]/dr = T at every r (within 4.5 standard errors);
  * the mean surrogate gradient matches T (min(r + 1/2, 1) - max(r - 1/2, 0)), is exactly T
    at r = 1/2, and matches finite differences of the expected stand-in;
  * the stand-in mode against central differences, the spiking backward against the
    straight-through one;
  * a rate trained through the sampler reaches its target firing probability;
  * inside an ESVAE: rates are multiples of 1/T and the latent spikes fire at those rates.

Figures: ``10_sampling.png`` (spike trains for five rates, frequency against rate, the count's
histogram against the binomial) and ``10_gradients.png`` (finite differences against the mean
surrogate, and the rate learned through the sampler).

Run:  python lessons/10_poisson_spike_sampling.py [--fast] [--out DIR] [--seed S]
"""
from __future__ import annotations

import math

import numpy as np

from _common import Checker, banner, parse_args, plt, save_figure, section, table

from snnvae import Tensor, data, optim
from snnvae.gradcheck import check_spiking_backward, grad_check
from snnvae.latent import draw_uniforms, poisson_spikes, sample_poisson_spikes
from snnvae.models import ESVAE, ESVAEConfig

SIGMAS = 4.5


def mean_surrogate(r, T):
    """E_U[dn/dr] = T P(|r - U| < 1/2) for U ~ U(0, 1)."""
    return T * (np.minimum(r + 0.5, 1.0) - np.maximum(r - 0.5, 0.0))


def main():
    args = parse_args(__doc__)
    rng = np.random.default_rng(args.seed)
    chk = Checker("lesson 10")
    banner("Lesson 10: Poisson spike sampling and why it is reparameterisable")

    # -----------------------------------------------------------------------------------------
    section("1. sampling and the surrogate, by hand")
    r = Tensor(np.array([[0.2, 0.7]]), requires_grad=True)        # (N = 1, C = 2)
    U = np.array([[[0.10, 0.90]], [[0.60, 0.65]], [[0.25, 0.05]]])  # (T = 3, N, C)
    z = poisson_spikes(r, U)
    print(f"  r = {r.data[0]}, uniforms per step (rows t): {U[:, 0].tolist()}")
    print(f"  z = 1[r > U]: {z.data[:, 0].astype(int).tolist()}")
    chk.equal("z_t = 1[r > U_t]: channel 0 fires at t = 0 only, channel 1 at t = 1 and 2",
              z.data[:, 0], [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    z.sum().backward()
    # channel 0: |0.2 - U| = 0.1, 0.4, 0.05 -> all inside the box: 3
    # channel 1: |0.7 - U| = 0.2, 0.05, 0.65 -> two inside: 2
    print(f"  dn/dr by the surrogate 1[|r - U_t| < 0.5], summed over t: {r.grad[0]}")
    chk.equal("surrogate gradient of the count: (3, 2) (|0.7 - 0.05| = 0.65 is outside the box)",
              r.grad, [[3.0, 2.0]])

    # -----------------------------------------------------------------------------------------
    section("2. z_t ~ Bernoulli(r), the count ~ Binomial(T, r)")
    T = 16
    n_draws = 20_000 if args.fast else 200_000
    grid = np.array([0.0, 0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.0])
    z, U = sample_poisson_spikes(np.tile(grid, (n_draws, 1)), T, rng)   # (T, n_draws, G)
    z = z.data
    freq = z.mean(axis=(0, 1))
    counts = z.sum(axis=0)                                            # (n_draws, G)
    sigma_f = np.sqrt(grid * (1 - grid) / (T * n_draws))
    var_c = T * grid * (1 - grid)
    # standard error of a sample variance ~ sqrt((mu4 - var^2) / n); the binomial's mu4 is
    # var (1 + 3 (T - 2) r (1 - r)) (its fourth central moment)
    mu4 = var_c * (1 + 3 * (T - 2) * grid * (1 - grid))
    se_var = np.sqrt(np.maximum(mu4 - var_c ** 2, 0) / n_draws)
    rows = []
    for g, rate in enumerate(grid):
        rows.append([f"{rate:.2f}", f"{freq[g]:.4f}", f"{counts[:, g].mean():.3f}", f"{T * rate:.3f}",
                     f"{counts[:, g].var():.3f}", f"{var_c[g]:.3f}"])
    table(rows, ["r", "freq(z=1)", "mean count", "T r", "var count", "T r (1-r)"])
    inner = (grid > 0) & (grid < 1)
    worst_f = np.max(np.abs(freq[inner] - grid[inner]) / sigma_f[inner])
    chk.check(f"freq(z_t = 1) = r within {SIGMAS} sigma ({T * n_draws:,} draws per rate)",
              worst_f <= SIGMAS, f"worst {worst_f:.2f} sigma")
    chk.check("r = 0 never fires, r = 1 always fires", freq[0] == 0 and freq[-1] == 1)
    worst_v = np.max(np.abs(counts.var(axis=0)[inner] - var_c[inner]) / se_var[inner])
    chk.check(f"count variance = T r (1 - r) within {SIGMAS} standard errors",
              worst_v <= SIGMAS, f"worst {worst_v:.2f}")
    chk.check("fresh uniforms at every step (no two steps share one)",
              len(np.unique(U[:, 0, 4])) == T)
    # two steps are independent: P(z_0 = z_1 = 1) = r^2 at r = 0.5
    joint = np.mean(z[0, :, 4] * z[1, :, 4])
    chk.check(f"steps are independent: P(z_0 = z_1 = 1) = r^2 (within {SIGMAS} sigma)",
              abs(joint - 0.25) <= SIGMAS * math.sqrt(0.25 * 0.75 / n_draws), f"{joint:.4f}")

    # -----------------------------------------------------------------------------------------
    section("3. the gradient of the expected count: pathwise, finite differences, surrogate")
    rates = np.linspace(0.02, 0.98, 13)
    m = 20_000 if args.fast else 200_000
    h = 0.02
    U = draw_uniforms(rng, (T, m, 1))
    fd, fd_se, sur, sur_se, exact_path = [], [], [], [], []
    for rate in rates:
        # finite differences of the count with the SAME uniforms (common random numbers):
        # each step flips exactly when U_t lies in (r - h, r + h]
        plus = (rate + h > U).sum(axis=0)[:, 0]
        minus = (rate - h > U).sum(axis=0)[:, 0]
        d = (plus - minus) / (2 * h)
        fd.append(d.mean())
        fd_se.append(d.std() / math.sqrt(m))
        # the surrogate gradient of the count, per sample, from autograd
        rt = Tensor(np.full((m, 1), rate), requires_grad=True)
        poisson_spikes(rt, U).sum().backward()
        g = rt.grad[:, 0]
        sur.append(g.mean())
        sur_se.append(g.std() / math.sqrt(m))
        exact_path.append(0.0)   # d 1[r > U] / dr = 0 wherever r != U (always, in practice)
    fd, fd_se, sur, sur_se = map(np.asarray, (fd, fd_se, sur, sur_se))
    closed = mean_surrogate(rates, T)
    table([[f"{r_:.2f}", f"{a:.2f} +- {b:.2f}", f"{c:.2f} +- {e:.2f}", f"{f:.2f}"]
           for r_, a, b, c, e, f in zip(rates, fd, fd_se, sur, sur_se, closed)],
          ["r", "finite diff. of count", "mean surrogate", "T P(|r-U|<1/2)"])
    worst_fd = np.max(np.abs(fd - T) / fd_se)
    chk.check(f"finite differences of the count with common uniforms = T = {T} at every r "
              f"({SIGMAS} s.e.)", worst_fd <= SIGMAS, f"worst {worst_fd:.2f} s.e.")
    sur_ok = np.abs(sur - closed) <= SIGMAS * np.maximum(sur_se, 1e-12)
    chk.check("mean surrogate gradient = T (min(r + 1/2, 1) - max(r - 1/2, 0))",
              np.all(sur_ok), f"max |diff| {np.max(np.abs(sur - closed)):.3f}")
    half = Tensor(np.full((m, 1), 0.5), requires_grad=True)
    poisson_spikes(half, U).sum().backward()
    chk.equal("at r = 1/2 every sample's surrogate gradient is exactly T", half.grad,
              np.full((m, 1), float(T)))
    chk.check("the surrogate is biased low away from r = 1/2 (T/2 < mean < T)",
              np.all(sur[[0, -1]] < 0.6 * T) and np.all(sur > 0.5 * T - 0.5))
    # the mean surrogate is the exact derivative of the expected stand-in E[h(r - U)]
    fd_smooth = []
    for rate in rates:
        hp = np.clip(rate + h - U + 0.5, 0, 1).sum(axis=0)
        hm = np.clip(rate - h - U + 0.5, 0, 1).sum(axis=0)
        fd_smooth.append(((hp - hm) / (2 * h)).mean())
    fd_smooth = np.asarray(fd_smooth)
    chk.close("finite differences of the expected stand-in = the mean surrogate (same uniforms)",
              fd_smooth, sur, atol=0.02 * T, rtol=0)

    # -----------------------------------------------------------------------------------------
    section("4. the stand-in mode and the spiking backward")
    rr = Tensor(rng.uniform(0.05, 0.95, size=(6, 5)), requires_grad=True)
    UU = draw_uniforms(rng, (8, 6, 5))
    R = Tensor(rng.standard_normal((8, 6, 5)))
    fn = lambda: (poisson_spikes(rr, UU) * R).sum()                   # noqa: E731
    chk.grad_results("stand-in h(r - U), central differences", grad_check(fn, [rr], ["r"]))
    chk.grad_results("spiking backward = straight-through", check_spiking_backward(fn, [rr], ["r"]))

    # -----------------------------------------------------------------------------------------
    section("5. learning rates through the sampler")
    targets = np.array([0.1, 0.3, 0.6, 0.85])
    logits = Tensor(np.zeros((1, 4)), requires_grad=True)             # r = sigmoid(a) = 0.5
    opt = optim.Adam([logits], lr=0.05)
    steps = 150 if args.fast else 400
    batch = 256
    history = []
    for _ in range(steps):
        rate = logits.sigmoid()
        z = poisson_spikes(rate, draw_uniforms(rng, (T, batch, 4)))
        gap = z.mean(axis=(0, 1)) - Tensor(targets)
        loss = (gap * gap).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(1 / (1 + np.exp(-logits.data[0])))
    learned = history[-1]
    print(f"  targets {targets}, learned rates {np.round(learned, 3)} after {steps} Adam steps "
          f"on (mean z - target)^2, {batch} x {T} spikes per step")
    chk.close("the learned rates reach their targets (within 0.05)", learned, targets, atol=0.05,
              rtol=0)

    # -----------------------------------------------------------------------------------------
    section("6. inside ESVAE: posterior rates and latent spikes")
    cfg = ESVAEConfig(hidden_channels=(8, 16), input_size=16, latent_dim=16,
                      timesteps=8 if args.fast else 16)
    model = ESVAE(cfg, rng=np.random.default_rng(args.seed))
    test_u8, _ = data.load_embedded_mnist("test")
    images = data.prepare_images(test_u8[:64 if args.fast else 256], size=cfg.input_size)
    out = model(images, rng=rng)
    r_q, zq = out.r_q.data, out.z.data
    levels = np.unique(np.round(r_q * cfg.timesteps, 5))
    print(f"  r_q {r_q.shape}: values x T = {levels.tolist()} (multiples of 1/T = 1/{cfg.timesteps})")
    chk.check("posterior rates are multiples of 1/T", np.allclose(levels, np.round(levels), atol=1e-4))
    chk.check("the untrained encoder fires (some rates > 0)", r_q.max() > 0, f"max {r_q.max():.3f}")
    # given r_q, z is Bernoulli(r_q) at every step: its mean matches the mean rate
    tol = SIGMAS * math.sqrt(np.sum(r_q * (1 - r_q)) * cfg.timesteps) / zq.size
    gap = abs(zq.mean() - r_q.mean())
    chk.check(f"the latent spikes fire at the posterior rates (mean, {SIGMAS} sigma)",
              gap <= tol, f"mean z {zq.mean():.4f}, mean r {r_q.mean():.4f}")

    # -----------------------------------------------------------------------------------------
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4))
    show = [0.1, 0.3, 0.5, 0.7, 0.9]
    Ts = 32
    trains, _ = sample_poisson_spikes(np.array([show]), Ts, np.random.default_rng(args.seed))
    ax1.imshow(trains.data[:, 0].T, aspect="auto", cmap="Greys", interpolation="nearest")
    for i in range(1, len(show)):
        ax1.axhline(i - 0.5, color="C0", lw=1)
    ax1.set_yticks(range(len(show)), [f"r = {s}" for s in show])
    ax1.set(xlabel="time step t", title="z_t = 1[r > U_t], fresh U_t at every step")
    ax2.plot([0, 1], [0, 1], "k:", lw=1, label="P(z = 1) = r")
    ax2.plot(grid, freq, "o", label=f"measured ({T * n_draws:,} draws per rate)")
    ax2.set(xlabel="rate r", ylabel="frequency of z_t = 1", title="each step is Bernoulli(r)")
    ax2.legend(fontsize=8)
    g = 2   # r = 0.2
    ks = np.arange(T + 1)
    pmf = np.array([math.comb(T, k) * grid[g] ** k * (1 - grid[g]) ** (T - k) for k in ks])
    ax3.bar(ks, np.bincount(counts[:, g].astype(int), minlength=T + 1) / n_draws, color="C1",
            label="measured")
    ax3.plot(ks, pmf, "k.-", label=f"Binomial({T}, {grid[g]})")
    ax3.set(xlabel=f"spike count over T = {T} steps", ylabel="probability",
            title=f"the count for r = {grid[g]}")
    ax3.legend(fontsize=8)
    save_figure(fig, args.out, "10_sampling.png")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    ax1.errorbar(rates, fd, yerr=SIGMAS * fd_se, fmt="o", ms=4,
                 label=f"finite differences of E[count], h = {h} (common uniforms)")
    ax1.plot(rates, sur, "s", mfc="none", ms=7, label="mean surrogate gradient (autograd)")
    fine = np.linspace(0, 1, 201)
    ax1.plot(fine, mean_surrogate(fine, T), "C1-", lw=1, label="T (min(r+1/2, 1) - max(r-1/2, 0))")
    ax1.axhline(T, color="k", ls=":", lw=1, label=f"d(T r)/dr = T = {T}")
    ax1.plot(rates, exact_path, "x", color="C3", label="exact pathwise derivative (0)")
    ax1.set(xlabel="rate r", ylabel="d E[count] / dr", ylim=(-1, T + 3),
            title="gradient of the expected spike count")
    ax1.legend(fontsize=7, loc="lower center")
    hist = np.asarray(history)
    for c in range(4):
        ax2.plot(hist[:, c], color=f"C{c}", label=f"target {targets[c]}")
        ax2.axhline(targets[c], color=f"C{c}", ls=":", lw=1)
    ax2.set(xlabel="Adam step", ylabel="rate r = sigmoid(a)",
            title="rates learned through the sampler's surrogate")
    ax2.legend(fontsize=8)
    save_figure(fig, args.out, "10_gradients.png")

    chk.finish()


if __name__ == "__main__":
    main()
