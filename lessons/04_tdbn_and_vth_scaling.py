"""Lesson 04: threshold-dependent batch norm (tdBN) and why it scales by alpha * Vth.

The problem
    A LIF neuron only fires when its current reaches Vth = 0.2. The currents a conv layer
    produces have whatever scale its weights and inputs give them: a little too small and the
    layer is silent (no spikes, no surrogate gradient for anything above it), a little too
    large and it fires at every step (a spike train that carries no information). Deep SNNs
    need every layer's currents kept near the threshold.

tdBN (Zheng et al., AAAI 2021)
    Normalise each channel c of the pre-activation x (T, N, C, H, W) with statistics taken
    over time, batch and space together, n = T * N * H * W values per channel:

        mean_c = (1/n) sum_{t,n,h,w} x          var_c = (1/n) sum (x - mean_c)^2   (biased)
        y      = alpha * Vth * gamma_c * (x - mean_c) / sqrt(var_c + eps) + beta_c

    With gamma = 1, beta = 0 at the start, y has mean 0 and standard deviation alpha * Vth:
    alpha = 1 puts one standard deviation exactly at the threshold; FSVAE uses alpha = 1 in
    the encoder and decoder and alpha = 2 in its latent networks. Pooling over T (instead of
    normalising each step separately) keeps the temporal structure of the currents: a
    current that grows over time still grows after tdBN.

    For a Gaussian current, the first step fires when alpha Vth z > Vth, i.e. z > 1/alpha:
        P(o_1 = 1) = 1 - Phi(1 / alpha)                  (Phi: the standard normal CDF)
    alpha = 1 -> 15.9 %, alpha = 2 -> 30.9 %, independent of the raw scale of x (as long as
    var_c is well above eps = 1e-5, which otherwise sets a floor).

Training vs eval
    Training mode uses the batch statistics and differentiates through them
        dL/dx = scale gamma invstd / n * (n g - sum(g) - xhat sum(g xhat)),  g = dL/dy,
    and updates running estimates with momentum m = 0.1:
        running_mean <- 0.9 running_mean + 0.1 mean_c
        running_var  <- 0.9 running_var  + 0.1 var_c n / (n - 1)       (unbiased)
    Eval mode uses the running estimates as constants: each sample is then processed
    independently of the rest of the batch.

What this lesson checks (exit status 1 if any fails):
  * a 4-value-per-channel example worked out by hand: output and running statistics;
  * statistics really pool T, N, H, W (per-step statistics differ; overall ones are exact);
  * with tdBN the firing rate depends on alpha only (not on the raw scale), and matches
    1 - Phi(1/alpha) at the first step; without normalisation it swings from 0 to ~1;
  * finite differences through tdBN -> LIF in training mode (input, gamma, beta), and the
    per-channel input gradients summing to zero;
  * running statistics follow the geometric formula, eval mode uses them, is batch-
    independent and passes its own finite-difference check;
  * NumPy reference kernels == Numba kernels.

Figure: ``04_tdbn_firing_rates.png`` (rate vs alpha, rate vs raw scale without tdBN,
running statistics over updates).

Run:  python lessons/04_tdbn_and_vth_scaling.py [--fast] [--out DIR] [--seed S]
"""
from __future__ import annotations

import numpy as np
from scipy.stats import norm

from _common import Checker, banner, parse_args, plt, save_figure, section, table

from snnvae import F, Tensor, backend, gradcheck, nn, no_grad
from snnvae.data import load_embedded_mnist, to_signed_unit

VTH, EPS = 0.2, 1e-5


def main():
    args = parse_args(__doc__)
    rng = np.random.default_rng(args.seed)
    chk = Checker("lesson 04")
    banner("Lesson 04: tdBN and the alpha * Vth scaling")

    # -----------------------------------------------------------------------------------------
    section("1. by hand: T = 2, N = 1, C = 2, H = 1, W = 2 (n = 4 values per channel)")
    x = np.zeros((2, 1, 2, 1, 2))
    x[:, 0, 0, 0, :] = [[0.0, 2.0], [0.0, 2.0]]   # channel 0: {0, 2, 0, 2}: mean 1, var 1
    x[:, 0, 1, 0, :] = [[1.0, 1.0], [1.0, 5.0]]   # channel 1: {1, 1, 1, 5}: mean 2, var 3
    bn = nn.TdBatchNorm(2, alpha=1.0, dtype=np.float64)
    y = bn(Tensor(x)).data
    expected = np.empty_like(x)
    expected[:, 0, 0] = 0.2 * (x[:, 0, 0] - 1.0) / np.sqrt(1.0 + EPS)
    expected[:, 0, 1] = 0.2 * (x[:, 0, 1] - 2.0) / np.sqrt(3.0 + EPS)
    print(f"  channel 0 in {x[:, 0, 0].ravel()} -> out {np.round(y[:, 0, 0].ravel(), 5)}")
    print(f"  channel 1 in {x[:, 0, 1].ravel()} -> out {np.round(y[:, 0, 1].ravel(), 5)}")
    chk.close("output = 0.2 (x - mean) / sqrt(var + 1e-5), mean/var over T and W", y, expected,
              atol=1e-15)
    # running_mean = 0.9 * 0 + 0.1 * mean;  running_var = 0.9 * 1 + 0.1 * var * 4 / 3
    print(f"  running_mean {bn.running_mean} (hand: [0.1, 0.2]), running_var {bn.running_var} "
          f"(hand: [0.9 + 0.4/3, 0.9 + 0.4] = [1.0333, 1.3])")
    chk.close("running_mean = 0.1 * batch mean", bn.running_mean, [0.1, 0.2], atol=1e-15)
    chk.close("running_var = 0.9 + 0.1 * unbiased var (n/(n-1) = 4/3)", bn.running_var,
              [0.9 + 0.4 / 3, 1.3], atol=1e-15)
    chk.close("alpha = 2 doubles the output", nn.TdBatchNorm(2, alpha=2.0, dtype=np.float64)(
        Tensor(x)).data, 2 * expected, atol=1e-15)

    # -----------------------------------------------------------------------------------------
    section("2. the statistics pool time: drift over t survives normalisation")
    T, N, C, H = 8, 16, 3, 6
    drift = np.linspace(-1, 1, T)[:, None, None, None, None]          # grows with t
    scale_c = np.array([1.0, 5.0, 0.1])[None, None, :, None, None]   # very different channels
    offset_c = np.array([0.0, 3.0, -1.0])[None, None, :, None, None]
    xd = (rng.normal(0, 1, size=(T, N, C, H, H)) + 2.0 * drift) * scale_c + offset_c
    yd = nn.TdBatchNorm(C, dtype=np.float64)(Tensor(xd)).data
    over_all = yd.mean(axis=(0, 1, 3, 4)), yd.std(axis=(0, 1, 3, 4))
    per_step = yd.mean(axis=(1, 3, 4))                                 # (T, C)
    print(f"  per channel over (T, N, H, W): mean {np.round(over_all[0], 6)}, std "
          f"{np.round(over_all[1], 6)} (alpha Vth = 0.2)")
    print(f"  per-step means of channel 0 after tdBN: {np.round(per_step[:, 0], 3)}")
    chk.close("each channel: mean 0 over (T, N, H, W)", over_all[0], np.zeros(C), atol=1e-12)
    chk.close("each channel: std alpha Vth = 0.2 (channel scales 1, 5, 0.1 removed)",
              over_all[1], np.full(C, 0.2), rtol=1e-3)
    chk.check("per-step means still rise with t (time was pooled, not normalised away)",
              np.all(np.diff(per_step, axis=0) > 0))

    # -----------------------------------------------------------------------------------------
    section("3. firing rate vs alpha, with and without tdBN")
    T_r = 8
    n_img = 16 if args.fast else 64
    images, _ = load_embedded_mnist("test")
    digits = to_signed_unit(images[:n_img])
    # float64 here: with direct coding every background patch gives the SAME current, so
    # thousands of neurons share one value; float32 rounding of (s x - mean) / std could push
    # all of them across a firing boundary at once and blur the comparison between scales.
    x_in = Tensor(np.repeat(digits[None], T_r, axis=0).astype(np.float64))  # direct coding
    conv = nn.Conv2d(1, 16, 3, stride=2, padding=1, rng=np.random.default_rng(args.seed),
                     dtype=np.float64)
    with no_grad():
        raw = conv(x_in).data                                           # (T, N, 16, 14, 14)
    scales = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0]               # rescale the currents
    alphas = np.array([0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0])
    rate_bn = np.zeros((len(scales), len(alphas)))
    rate_raw = np.zeros(len(scales))
    with no_grad():
        for i, s in enumerate(scales):
            current = Tensor(raw * s)
            rate_raw[i] = F.lif(current).data.mean()
            for j, a in enumerate(alphas):
                rate_bn[i, j] = F.lif(nn.TdBatchNorm(16, alpha=a, dtype=np.float64)(current)).data.mean()
    rows = [[f"x{s:g}", f"{r:.4f}"] + [f"{v:.4f}" for v in rate_bn[i, [1, 3, 5]]]
            for i, (s, r) in enumerate(zip(scales, rate_raw))]
    table(rows, ["current scale", "no norm", "tdBN a=0.5", "tdBN a=1", "tdBN a=2"])
    # tdBN divides by sqrt(var + eps) with eps = 1e-5: currents whose variance is not much
    # larger than eps (the smallest scales) are not fully normalised. And with direct coding
    # all background patches share one current value, so a small change of that value can move
    # thousands of neurons across a firing boundary at once: rates jump rather than drift.
    big = np.array(scales) >= 1.0
    spread = np.ptp(rate_bn[big], axis=0).max()
    print(f"  raw current std {raw.std():.3f}; at x0.01 its variance {(0.01 * raw.std()) ** 2:.1e} "
          f"is comparable to eps = 1e-5, so tdBN cannot fully rescale it")
    chk.check("with tdBN the rate does not depend on the raw scale (x1 .. x100: spread < 0.002)",
              spread < 2e-3, f"largest spread over scales {spread:.1e}")
    chk.check("with tdBN the rate increases with alpha", np.all(np.diff(rate_bn[3]) > 0),
              f"{np.round(rate_bn[3], 3)}")
    chk.check("without normalisation the rate follows the scale: silent (< 0.01) at x0.1, "
              "> 0.25 at x10", rate_raw[2] < 0.01 and rate_raw[-2] > 0.25 and
              np.all(np.diff(rate_raw) >= 0), f"{np.round(rate_raw, 3)}")
    # The first-step rate for Gaussian currents, against 1 - Phi(1 / alpha).
    M = 40_000 if args.fast else 400_000
    gauss = Tensor(rng.normal(3.0, 7.0, size=(T_r, M, 1)).astype(np.float32))
    first = []
    with no_grad():
        for a in alphas:
            first.append(F.lif(nn.TdBatchNorm(1, alpha=a)(gauss)).data[0].mean())
    first, predicted = np.array(first), 1 - norm.cdf(1 / alphas)
    sigma = np.sqrt(predicted * (1 - predicted) / M)
    print(f"  first-step rate, Gaussian currents ({M} neurons): measured {np.round(first, 4)}")
    print(f"                                   1 - Phi(1/alpha): {np.round(predicted, 4)}")
    chk.check("first-step rate == 1 - Phi(1/alpha) within 5 binomial standard errors",
              np.all(np.abs(first - predicted) <= 5 * sigma + 1e-4),
              f"max |diff| / sigma = {np.max(np.abs(first - predicted) / sigma):.1f}")

    # -----------------------------------------------------------------------------------------
    section("4. finite differences through tdBN (training mode) -> LIF")
    grng = np.random.default_rng(args.seed + 1)
    Tg, Ng, Cg, Hg = (4, 2, 3, 3) if args.fast else (8, 3, 4, 4)
    bn = nn.TdBatchNorm(Cg, alpha=2.0, dtype=np.float64)
    bn.weight.data = grng.uniform(0.5, 1.5, size=Cg)                  # move off gamma = 1
    bn.bias.data = grng.normal(0, 0.1, size=Cg)
    xg = Tensor(grng.normal(0.5, 2.0, size=(Tg, Ng, Cg, Hg, Hg)), requires_grad=True)
    readout = Tensor(grng.normal(size=xg.shape))

    def loss():
        return (F.lif(bn(xg)) * readout).sum()

    samples = 20 if args.fast else 60
    results = gradcheck.grad_check(loss, [xg, bn.weight, bn.bias], ["x", "gamma", "beta"],
                                   samples=samples, rng=grng)
    for r in results:
        print("  " + str(r))
    chk.grad_results("tdBN(train, alpha=2) -> LIF", results)
    chk.grad_results("tdBN(train) -> LIF, spiking vs straight-through",
                     gradcheck.check_spiking_backward(loss, [xg, bn.weight, bn.bias],
                                                      ["x", "gamma", "beta"]))
    with F.spike_mode("smooth"):
        xg.zero_grad()
        loss().backward()
    per_channel = xg.grad.sum(axis=(0, 1, 3, 4))
    chk.close("training mode: dL/dx sums to 0 in each channel (shifting a channel changes nothing)",
              per_channel, np.zeros(Cg), atol=1e-12)

    # -----------------------------------------------------------------------------------------
    section("5. running statistics and eval mode")
    bn = nn.TdBatchNorm(2, dtype=np.float64)
    batch = Tensor(x)                                   # the section-1 input, fed again and again
    steps = 30
    history = []
    for _ in range(steps):
        bn(batch)
        history.append((bn.running_mean.copy(), bn.running_var.copy()))
    k = np.arange(1, steps + 1)[:, None]
    mean_hand = np.array([1.0, 2.0]) * (1 - 0.9 ** k)
    var_hand = 0.9 ** k * 1.0 + (1 - 0.9 ** k) * np.array([1.0, 3.0]) * 4 / 3
    hist_mean = np.array([h[0] for h in history])
    hist_var = np.array([h[1] for h in history])
    chk.close("after k updates: running_mean = mean (1 - 0.9^k)", hist_mean, mean_hand, atol=1e-13)
    chk.close("after k updates: running_var = 0.9^k + (1 - 0.9^k) var n/(n-1)", hist_var, var_hand,
              atol=1e-13)
    bn.eval()
    y_eval = bn(batch).data
    rm, rv = bn.running_mean, bn.running_var
    expected_eval = 0.2 * (x - rm[None, None, :, None, None]) / np.sqrt(rv[None, None, :, None, None] + EPS)
    chk.close("eval output uses the running statistics", y_eval, expected_eval, atol=1e-14)
    chk.check("eval mode leaves the running statistics alone",
              np.array_equal(bn.running_mean, hist_mean[-1]))
    # Batch independence: sample 0 alone vs sample 0 inside a batch of others.
    data = rng.normal(1.0, 2.0, size=(4, 6, 3, 5, 5))
    bn3 = nn.TdBatchNorm(3, dtype=np.float64)
    for _ in range(20):
        bn3(Tensor(rng.normal(1.0, 2.0, size=(4, 6, 3, 5, 5))))
    print(f"  running stats after 20 batches from N(1, 2^2): mean {np.round(bn3.running_mean, 2)}, "
          f"var {np.round(bn3.running_var, 2)}")
    chk.close("running statistics approach the data's mean 1 and variance 4",
              np.concatenate([bn3.running_mean, bn3.running_var]), [1, 1, 1, 4, 4, 4],
              atol=0.3, rtol=0.05)
    alone_train = bn3(Tensor(data[:, :1])).data
    batch_train = bn3(Tensor(data)).data[:, :1]
    bn3.eval()
    alone_eval = bn3(Tensor(data[:, :1])).data
    batch_eval = bn3(Tensor(data)).data[:, :1]
    chk.check("training mode: a sample's output depends on the rest of the batch",
              np.abs(alone_train - batch_train).max() > 1e-3)
    chk.close("eval mode: a sample's output is independent of the batch", alone_eval, batch_eval,
              atol=1e-14)
    xe = Tensor(data[:2, :2].copy(), requires_grad=True)
    results = gradcheck.grad_check(lambda: (F.lif(bn3(xe)) * Tensor(data[:2, :2])).sum(),
                                   [xe, bn3.weight, bn3.bias], ["x", "gamma", "beta"],
                                   samples=samples, rng=grng)
    chk.grad_results("tdBN(eval) -> LIF", results)

    # -----------------------------------------------------------------------------------------
    section("6. NumPy reference kernels vs Numba kernels")
    ref, fast = backend.kernels("numpy"), backend.kernels("cpu")
    x3 = rng.normal(2.0, 3.0, size=(64, 16, 49)).astype(np.float32)   # (T*N, C, H*W)
    g3 = rng.normal(size=x3.shape).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, 16).astype(np.float32)
    beta = rng.normal(0, 0.1, 16).astype(np.float32)
    out_r = ref.tdbn_forward_train(x3, gamma, beta, 0.2, EPS)
    out_c = fast.tdbn_forward_train(x3, gamma, beta, 0.2, EPS)
    for name, a, b in zip(("y", "xhat", "invstd", "mean", "var"), out_c, out_r):
        chk.close(f"tdbn_forward_train {name}: numpy == numba", a, b, atol=1e-4, rtol=1e-4)
    back_r = ref.tdbn_backward_train(g3, out_r[1], out_r[2], gamma, 0.2)
    back_c = fast.tdbn_backward_train(g3, out_c[1], out_c[2], gamma, 0.2)
    for name, a, b in zip(("x", "gamma", "beta"), back_c, back_r):
        chk.close(f"tdbn_backward_train d/d{name}: numpy == numba", a, b, atol=1e-3, rtol=1e-4)
    rm, rv = out_r[3], out_r[4]
    ev_r = ref.tdbn_forward_eval(x3, gamma, beta, 0.2, rm, rv, EPS)
    ev_c = fast.tdbn_forward_eval(x3, gamma, beta, 0.2, rm, rv, EPS)
    chk.close("tdbn_forward_eval: numpy == numba", ev_c[0], ev_r[0], atol=1e-5, rtol=1e-5)
    eb_r = ref.tdbn_backward_eval(g3, ev_r[1], ev_r[2], gamma, 0.2)
    eb_c = fast.tdbn_backward_eval(g3, ev_c[1], ev_c[2], gamma, 0.2)
    for name, a, b in zip(("x", "gamma", "beta"), eb_c, eb_r):
        chk.close(f"tdbn_backward_eval d/d{name}: numpy == numba", a, b, atol=1e-3, rtol=1e-4)

    # -----------------------------------------------------------------------------------------
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.2))
    for i, s in enumerate(scales):
        ax1.plot(alphas, rate_bn[i], "o-", ms=4, alpha=0.7, label=f"tdBN, currents x{s:g}")
    aa = np.linspace(0.2, 4.2, 200)
    ax1.plot(aa, 1 - norm.cdf(1 / aa), "k--", lw=1, label="1 - Phi(1/alpha) (Gaussian, t = 1)")
    ax1.plot(alphas, first, "k^", ms=6, label="measured, Gaussian, t = 1")
    ax1.axvline(1.0, color="gray", lw=0.8, ls=":")
    ax1.axvline(2.0, color="gray", lw=0.8, ls=":")
    ax1.set(xlabel="alpha (tdBN output std = alpha * Vth)", ylabel="firing rate",
            title="with tdBN: the rate is set by alpha alone")
    ax1.legend(fontsize=7)
    ax2.semilogx(scales, rate_raw, "s-", color="C3", label="no normalisation")
    ax2.semilogx(scales, rate_bn[:, 1], "o-", color="C1", label="tdBN, alpha = 0.5")
    ax2.semilogx(scales, rate_bn[:, 3], "o-", color="C0", label="tdBN, alpha = 1")
    ax2.semilogx(scales, rate_bn[:, 5], "o-", color="C2", label="tdBN, alpha = 2")
    ax2.set(xlabel="scale s of the conv currents (s * conv(x))", ylabel="firing rate", ylim=(-0.03, 1.03),
            title="without tdBN the rate follows the raw scale")
    ax2.legend(fontsize=8)
    ax3.plot(k, hist_mean[:, 1], "o", ms=3, label="running_mean (channel 1)")
    ax3.plot(k, mean_hand[:, 1], "-", lw=1, label="2 (1 - 0.9^k)")
    ax3.plot(k, hist_var[:, 1], "s", ms=3, label="running_var (channel 1)")
    ax3.plot(k, var_hand[:, 1], "-", lw=1, label="0.9^k + 4 (1 - 0.9^k)")
    ax3.set(xlabel="training-mode calls k (same batch)", title="running statistics, momentum 0.1")
    ax3.legend(fontsize=8)
    save_figure(fig, args.out, "04_tdbn_firing_rates.png")

    chk.finish()


if __name__ == "__main__":
    main()
