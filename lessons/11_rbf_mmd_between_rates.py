"""Lesson 11: the RBF-kernel MMD between posterior and prior rates (ESVAE's distance).

What has to match
    ESVAE (lesson 10) encodes an image into firing rates r_q (N, C) and generates from rates
    r_p = sigmoid(W eps + b), eps ~ N(0, I). Generation only works if the rates the prior
    produces look like the rates images produce: the two *distributions* over [0, 1]^C must
    match, not the individual samples (r_p is drawn independently of the image). A distance
    between two sets of samples is needed: ESVAE uses the maximum mean discrepancy.

The maximum mean discrepancy
    A kernel k(a, b) compares two points. The mean embedding of a distribution P is the function
    mu_P(.) = E_{a ~ P}[k(a, .)]; the squared MMD is the squared distance between embeddings,

        MMD^2(P, Q) = E k(a, a') + E k(b, b') - 2 E k(a, b),    a, a' ~ P,  b, b' ~ Q

    For a characteristic kernel such as the Gaussian (RBF) one, MMD = 0 exactly when P = Q. With
    samples x_1..x_M ~ P and y_1..y_N ~ Q each expectation becomes a mean over all pairs. ESVAE
    keeps the pairs i = j (the biased estimator, >= 0 always):

        MMD^2 = mean_ij k(x_i, x_j) + mean_ij k(y_i, y_j) - mean_ij k(x_i, y_j) - mean_ij k(y_i, x_j)

    Pool the rows z = [x; y] and give them signs s_i = 1/M (rows of x) and -1/N (rows of y):
    then MMD^2 = sum_ij s_i s_j K_ij = s^T K s with the pooled kernel matrix K (M+N, M+N).

ESVAE's kernel
    A sum of five RBF kernels on the squared distances d_ij = |z_i - z_j|^2,

        K_ij = sum_{l=0..4} exp(-d_ij / b_l),    b_l = b / 4 * 2^l   (b/4, b/2, b, 2b, 4b)

    with b = sum_ij d_ij / ((M+N)^2 - (M+N)) the mean squared distance between distinct rows.
    b follows the data, so the kernels stay sensible whether the rates are spread out or
    bunched; it is *detached*: treated as a constant when differentiating. Several bandwidths
    make the distance sensitive to differences at several scales at once.

    Linear kernel k(a, b) = a . b instead: MMD^2 = |mean x - mean y|^2, which only compares the
    means. Two distributions with equal means and different spreads are 0 apart for it; the RBF
    MMD sees the difference (section 3).

The gradient (bandwidths held fixed)
    Since d_aj depends on z_a as 2 (z_a - z_j) and K is symmetric,

        dMMD^2/dz_a = -4 s_a sum_j s_j (sum_l exp(-d_aj / b_l) / b_l) (z_a - z_j)

    Each sample of x is pulled towards samples of y (s_a s_j < 0 terms) and pushed away from
    the other samples of x; samples close together (within a bandwidth) interact most. In ESVAE
    the gradient reaches the encoder through r_q and the prior's sample layer through r_p; with
    loss = MSE + 0.001 MMD^2 the prior learns only from this term (AdamW makes the 0.001 weight
    irrelevant for its step size, and the sample layer runs at 10x the learning rate).

In ``snnvae``: ``F.rbf_mmd(x, y, bandwidth=None)``, ``F.linear_mmd``, ``F.rbf_kernels``,
``F.pairwise_sq_distances``, ``F.rbf_bandwidth`` (``snnvae/functional/mmd.py``);
``ESVAE.loss`` and ``ESVAE.parameter_groups``.

What this lesson checks (exit status 1 if any fails):
  * a one-dimensional example by hand; s^T K s equals the four block means;
  * the closed-form gradient above against autograd, and both against central differences;
  * the detached bandwidth: autograd's gradient is that of the fixed-bandwidth loss;
  * equal distributions give a small MMD, different ones a large one; equal means with
    different spreads: the linear MMD cannot tell them apart, the RBF MMD can;
  * the prior alone, trained on the RBF MMD to the rates of real digits, cuts the MMD by more
    than half and moves its mean rate per channel to the posterior's;
  * a short ESVAE training on real digits: the MMD between posterior and prior rates falls
    well below its start while the reconstruction improves.

Figures: ``11_mmd_kernels.png`` (kernels and the linear vs RBF comparison),
``11_prior_fit.png`` (the prior's rates before and after fitting them to the posterior's) and
``11_training.png`` (the two rate distributions as a short ESVAE training proceeds, MMD and MSE).

Run:  python lessons/11_rbf_mmd_between_rates.py [--fast] [--out DIR] [--seed S]
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # small matrix products; see lessons/README

import numpy as np  # noqa: E402

from _common import Checker, banner, parse_args, plt, save_figure, section  # noqa: E402

from snnvae import F, Tensor, data, no_grad, optim  # noqa: E402
from snnvae.gradcheck import grad_check  # noqa: E402
from snnvae.latent import RatePrior  # noqa: E402
from snnvae.models import ESVAE, ESVAEConfig  # noqa: E402
from snnvae.nn import calibrate_running_statistics  # noqa: E402


def mmd_by_blocks(x, y, b):
    """The official form: four block means of the pooled kernel matrix (NumPy, no autograd)."""
    z = np.concatenate([x, y])
    d = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    K = sum(np.exp(-d / (b / 4 * 2 ** l)) for l in range(5))
    m = len(x)
    return K[:m, :m].mean() + K[m:, m:].mean() - K[:m, m:].mean() - K[m:, :m].mean()


def mmd_gradient(x, y, b):
    """dMMD^2/dz for fixed bandwidth b, written out (see the docstring)."""
    z = np.concatenate([x, y])
    m, n = len(x), len(y)
    s = np.concatenate([np.full(m, 1 / m), np.full(n, -1 / n)])
    d = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    w = sum(np.exp(-d / bl) / bl for bl in (b / 4 * 2 ** l for l in range(5)))   # (n, n)
    diff = z[:, None, :] - z[None, :, :]                                       # z_a - z_j
    g = -4 * s[:, None] * ((s[None, :, None] * w[:, :, None]) * diff).sum(axis=1)
    return g[:m], g[m:]


def main():
    args = parse_args(__doc__)
    rng = np.random.default_rng(args.seed)
    chk = Checker("lesson 11")
    banner("Lesson 11: the RBF-kernel MMD between posterior and prior rates")

    # -----------------------------------------------------------------------------------------
    section("1. by hand")
    # x = {0}, y = {1} in one dimension: d = [[0, 1], [1, 0]], b = (1 + 1) / (4 - 2) = 1
    bws = [0.25, 0.5, 1.0, 2.0, 4.0]
    kxy = sum(np.exp(-1 / bw) for bw in bws)
    by_hand = 5 + 5 - 2 * kxy
    value = F.rbf_mmd(np.zeros((1, 1)), np.ones((1, 1))).item()
    print(f"  x = {{0}}, y = {{1}}: b = 1, bandwidths {bws}; K_xx = K_yy = 5, "
          f"K_xy = {kxy:.4f}; MMD^2 = 10 - 2 K_xy = {by_hand:.6f}")
    chk.close("one point each, by hand", value, by_hand, atol=0, rtol=1e-13)
    x = rng.uniform(size=(5, 3))
    y = rng.uniform(size=(7, 3))
    b = F.rbf_bandwidth(F.pairwise_sq_distances(np.concatenate([x, y])))
    chk.close("s^T K s = mean K_xx + mean K_yy - mean K_xy - mean K_yx (5 vs 7 rows)",
              F.rbf_mmd(x, y).item(), mmd_by_blocks(x, y, b), atol=0, rtol=1e-12)
    chk.close("linear MMD = |mean x - mean y|^2", F.linear_mmd(x, y).item(),
              np.sum((x.mean(0) - y.mean(0)) ** 2), atol=0, rtol=1e-12)

    # -----------------------------------------------------------------------------------------
    section("2. the gradient")
    xt, yt = Tensor(x.copy(), requires_grad=True), Tensor(y.copy(), requires_grad=True)
    F.rbf_mmd(xt, yt, bandwidth=b).backward()
    gx, gy = mmd_gradient(x, y, b)
    chk.close("closed-form gradient = autograd (x)", xt.grad, gx, atol=1e-14, rtol=1e-10)
    chk.close("closed-form gradient = autograd (y)", yt.grad, gy, atol=1e-14, rtol=1e-10)
    chk.grad_results("rbf MMD, fixed bandwidth, central differences",
                     grad_check(lambda: F.rbf_mmd(xt, yt, bandwidth=b), [xt, yt], ["x", "y"],
                                spike="spike"))
    chk.grad_results("linear MMD, central differences",
                     grad_check(lambda: F.linear_mmd(xt, yt), [xt, yt], ["x", "y"], spike="spike"))
    xt.grad = None
    F.rbf_mmd(xt, yt).backward()
    chk.close("data-dependent bandwidth: its gradient = the fixed-bandwidth gradient (detached)",
              xt.grad, gx, atol=1e-14, rtol=1e-10)

    # -----------------------------------------------------------------------------------------
    section("3. what each MMD sees")
    n, reps = (64, 20) if args.fast else (128, 60)
    D = 4

    def draw(spread):   # rates around 0.5 with a given spread
        return np.clip(0.5 + spread * rng.standard_normal((n, D)), 0, 1)

    def compare(spread_y, shift_y=0.0):
        """(rbf, linear, noise floor of the linear MMD) for one pair of samples. Even for equal
        means, |mean x - mean y|^2 has expectation sum(var x)/n + sum(var y)/n."""
        a, c = draw(0.1), draw(spread_y) + shift_y
        floor = (a.var(0, ddof=1).sum() + c.var(0, ddof=1).sum()) / n
        return F.rbf_mmd(a, c).item(), F.linear_mmd(a, c).item(), floor

    same = np.asarray([compare(0.1) for _ in range(reps)])
    spread = np.asarray([compare(0.35) for _ in range(reps)])
    shifted = np.asarray([compare(0.1, 0.2) for _ in range(reps)])
    print(f"  {reps} repetitions, {n} samples each, D = {D}; linear MMD also relative to its "
          f"sampling noise floor sum(var)/n")
    for name, v in [("same distribution         ", same), ("same mean, 3.5x the spread", spread),
                    ("mean shifted by 0.2       ", shifted)]:
        print(f"    {name} rbf {v[:, 0].mean():.4f} +- {v[:, 0].std():.4f}   linear "
              f"{v[:, 1].mean():.4f} = {np.mean(v[:, 1] / v[:, 2]):.2f} x noise floor")
    chk.check("RBF: different spreads score far above equal distributions (min vs max of runs)",
              spread[:, 0].min() > 2 * same[:, 0].max(),
              f"{spread[:, 0].min():.4f} vs {same[:, 0].max():.4f}")
    ratio = np.mean(spread[:, 1] / spread[:, 2])
    chk.check("linear: different spreads with equal means stay at the noise floor (ratio < 2)",
              ratio < 2, f"{ratio:.2f} x floor")
    chk.check("both see a shifted mean (min vs max of runs; linear: > 10 x its noise floor)",
              shifted[:, 0].min() > 2 * same[:, 0].max()
              and np.min(shifted[:, 1] / shifted[:, 2]) > 10)

    # -----------------------------------------------------------------------------------------
    section("4. the prior alone learns the rates of real digits")
    T = 8
    cfg = ESVAEConfig(hidden_channels=(8, 16), input_size=16, latent_dim=8 if args.fast else 16,
                      timesteps=T)
    model = ESVAE(cfg, rng=np.random.default_rng(args.seed))
    train_u8, _ = data.load_embedded_mnist("train")
    images = data.prepare_images(train_u8[:2000 if args.fast else 8000], size=cfg.input_size)
    with no_grad():
        r_q_all = model.posterior_rates(images[:512]).data           # (512, C), untrained encoder
    C = cfg.latent_dim
    prior = RatePrior(C, rng=np.random.default_rng(args.seed + 1))
    opt = optim.AdamW(prior.parameters(), lr=3e-2, weight_decay=1e-3)   # 10 x 3e-3, as ESVAE
    fit_steps = 150 if args.fast else 400
    with no_grad():
        before = prior(512, np.random.default_rng(7)).data
    fit_curve = []
    for _ in range(fit_steps):
        idx = rng.choice(len(r_q_all), 128, replace=False)
        loss = F.rbf_mmd(Tensor(r_q_all[idx]), prior(128, rng))
        opt.zero_grad()
        loss.backward()
        opt.step()
        fit_curve.append(loss.item())
    with no_grad():
        after = prior(512, np.random.default_rng(7)).data
    start = F.rbf_mmd(r_q_all, before).item()
    end = F.rbf_mmd(r_q_all, after).item()
    print(f"  posterior rates of {len(r_q_all)} digits (untrained encoder, T = {T}), C = {C}: "
          f"fraction at 0: {np.mean(r_q_all == 0):.2f}")
    print(f"  RBF MMD^2 to 512 fresh prior samples: {start:.4f} before, {end:.4f} after "
          f"{fit_steps} AdamW steps on the sample layer only")
    chk.check("fitting the prior cuts the MMD by more than half", end < 0.5 * start,
              f"{start:.4f} -> {end:.4f}")
    gap = np.abs(after.mean(0) - r_q_all.mean(0)).mean()
    gap0 = np.abs(before.mean(0) - r_q_all.mean(0)).mean()
    chk.check("the mean rate per channel moves to the posterior's (mean |gap| shrinks to less "
              "than 30 %)", gap < 0.3 * gap0, f"{gap0:.3f} -> {gap:.3f}")

    # -----------------------------------------------------------------------------------------
    section("5. a short ESVAE training: both rate distributions move")
    model = ESVAE(cfg, rng=np.random.default_rng(args.seed))
    opt = optim.AdamW(model.parameter_groups(), lr=3e-3, weight_decay=1e-3)
    for group in opt.param_groups:                        # what snnvae.train.Trainer does
        group["lr"] *= group["lr_scale"]
    steps = 40 if args.fast else 300
    batch = 32 if args.fast else 64
    snap_at = sorted({0, steps // 4, steps - 1})
    snaps, curve = {}, []
    for step in range(steps):
        idx = rng.choice(len(images), batch, replace=False)
        out = model(images[idx], rng=rng)
        losses = model.loss(images[idx], out)
        opt.zero_grad()
        losses.loss.backward()
        opt.step()
        curve.append((losses.reconstruction.item(), losses.distance.item()))
        if step in snap_at:
            snaps[step] = (out.r_q.data.copy(), out.r_p.data.copy())
    curve = np.asarray(curve)
    first, last = curve[:3].mean(0), curve[-5:].mean(0)
    print(f"  {steps} steps, batch {batch}, 16 x 16 digits, latent {C}, T = {T}")
    print(f"  MSE {first[0]:.4f} -> {last[0]:.4f}, RBF MMD^2 {first[1]:.4f} -> {last[1]:.4f} "
          f"(first 3 / last 5 steps)")
    chk.check("the MMD between posterior and prior rates falls below 30 % of its start",
              last[1] < 0.3 * first[1], f"{first[1]:.4f} -> {last[1]:.4f}")
    chk.check("the reconstruction error falls by more than 30 %", last[0] < 0.7 * first[0],
              f"{first[0]:.4f} -> {last[0]:.4f}")
    calibrate_running_statistics(model, lambda: model(images[:256], rng=np.random.default_rng(1)))
    model.eval()
    samples = model.sample(16, np.random.default_rng(2))
    chk.check("samples from the prior are images in [-1, 1] that differ",
              samples.shape == (16, 1, 16, 16) and np.all(np.abs(samples) <= 1)
              and samples.std(axis=0).max() > 0)

    # -----------------------------------------------------------------------------------------
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    z1 = np.linspace(0, 1, 6)[:, None]
    d = (z1 - z1.T) ** 2
    bb = d.sum() / (36 - 6)
    grid = np.linspace(0, 1, 200)
    for l in range(5):
        bl = bb / 4 * 2 ** l
        axes[0].plot(grid, np.exp(-grid ** 2 / bl), label=f"b_{l} = {bl:.3f}")
    axes[0].plot(grid, sum(np.exp(-grid ** 2 / (bb / 4 * 2 ** l)) for l in range(5)) / 5, "k",
                 lw=2, label="sum / 5")
    axes[0].set(xlabel="|a - b|", ylabel="k(a, b)",
                title=f"the five RBF kernels (b = {bb:.3f}: 6 points on [0, 1])")
    axes[0].legend(fontsize=7)
    labels = ["same", "3.5x spread", "mean + 0.2"]
    for i, (name, col) in enumerate([("rbf", 0), ("linear", 1)]):
        vals = [same[:, col], spread[:, col], shifted[:, col]]
        axes[1 + i].boxplot(vals)
        axes[1 + i].set_xticks([1, 2, 3], labels)
        axes[1 + i].set(ylabel="MMD^2", title=f"{name} MMD^2 over {reps} repetitions")
    save_figure(fig, args.out, "11_mmd_kernels.png")

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].hist(r_q_all.ravel(), bins=np.linspace(0, 1, 41), alpha=0.6, density=True,
                 label="posterior r_q (digits)")
    axes[0].hist(before.ravel(), bins=np.linspace(0, 1, 41), alpha=0.6, density=True,
                 label="prior r_p before")
    axes[0].hist(after.ravel(), bins=np.linspace(0, 1, 41), histtype="step", lw=2, density=True,
                 label="prior r_p after")
    axes[0].set(xlabel="rate (all channels)", ylabel="density", title="rates, all channels pooled")
    axes[0].legend(fontsize=8)
    axes[1].scatter(r_q_all[:, 0] + rng.uniform(-0.02, 0.02, len(r_q_all)),
                    r_q_all[:, 1] + rng.uniform(-0.02, 0.02, len(r_q_all)), s=4, alpha=0.4,
                    label="posterior (jittered)")
    axes[1].scatter(after[:, 0], after[:, 1], s=4, alpha=0.4, label="prior after fitting")
    axes[1].set(xlabel="channel 0", ylabel="channel 1", xlim=(-0.05, 1.05), ylim=(-0.05, 1.05),
                title="two channels jointly")
    axes[1].legend(fontsize=8)
    axes[2].plot(fit_curve, lw=0.8)
    axes[2].set(xlabel="AdamW step (sample layer only)", ylabel="RBF MMD^2 (batch of 128)",
                title="fitting the prior")
    save_figure(fig, args.out, "11_prior_fit.png")

    fig, axes = plt.subplots(1, len(snap_at) + 1, figsize=(4.2 * (len(snap_at) + 1), 3.8))
    for ax, step in zip(axes, snap_at):
        r_q, r_p = snaps[step]
        ax.hist(r_q.ravel(), bins=np.linspace(0, 1, T + 2), alpha=0.6, density=True,
                label="posterior r_q")
        ax.hist(r_p.ravel(), bins=np.linspace(0, 1, 41), alpha=0.6, density=True,
                label="prior r_p")
        ax.set(xlabel="rate", title=f"step {step}: MMD^2 {curve[step, 1]:.3f}")
        ax.legend(fontsize=8)
    axes[-1].plot(curve[:, 1], label="RBF MMD^2(r_q, r_p)")
    axes[-1].plot(curve[:, 0], label="reconstruction MSE")
    axes[-1].set(xlabel="step", yscale="log", title="ESVAE training")
    axes[-1].legend(fontsize=8)
    save_figure(fig, args.out, "11_training.png")

    chk.finish()


if __name__ == "__main__":
    main()
