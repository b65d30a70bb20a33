"""Lesson 08: FSVAE's losses, and feeding the prior its own guesses (scheduled sampling).

The loss
    FSVAE trains encoder, posterior, prior and decoder together on

        loss = MSE(reconstruction, image) + w * D(q_z, p_z)

    where q_z, p_z (T, N, C, k) are the spikes of the posterior and of the prior (lesson 07;
    the prior is run on the posterior's own samples, shifted by one step). Both distances only
    look at the rates r = mean_k z_spikes, shape (T, N, C): the probabilities of the Bernoulli
    latents (lesson 06). Neither side is detached, so the prior learns to predict the
    posterior and the posterior is pulled towards what the prior can predict.

The PSP distance (the paper calls it "MMD"; weight w = 1, the default)
    Both rate sequences go through the first-order synaptic filter (tau_s = 2)

        PSP(r)_t = PSP(r)_{t-1} + (r_t - PSP(r)_{t-1}) / tau_s
                 = sum_{s <= t} (1/2) (1/2)^(t-s) r_s              (tau_s = 2, PSP_{-1} = 0)

    and D_psp = mean over (T, N, C) of (PSP(r_q)_t - PSP(r_p)_t)^2. The filter is linear, so
    this is the squared, exponentially smoothed difference of the rates: a mismatch at step s
    still counts at s+1, s+2, .. with weights halving. It is *not* a kernel maximum mean
    discrepancy, despite its name. Its gradient, with d = PSP(r_q - r_p) and M = T N C:

        dD/dr_q[t] = (2 / M) sum_{u >= t} (1/2)^(u-t+1) d_u,   dD/dr_p = -dD/dr_q,
        dD/dq_z[t, n, c, j] = dD/dr_q[t, n, c] / k

    For rates constant in time, D_psp = (r_q - r_p)^2 * mean_t (1 - 2^-(t+1))^2: a parabola.

The Bernoulli KL (weight w = 1e-4)
    KL(Bernoulli(q) || Bernoulli(p)) per (t, n, c), with s = 0.01 added inside each ratio so
    that p = 0 or p = 1 give finite values (at most log(1.01 / 0.01) = 4.62 per element):

        kl = q log((q + s) / (p + s)) + (1 - q) log((1 - q + s) / (1 - p + s))
        D_kl = sum over t and c, mean over the batch n

    The smoothing has a side effect worth knowing: setting the derivative in p to zero gives
    q / (p + s) = (1 - q) / (1 - p + s), i.e. p* = q (1 + 2 s) - s, not p = q. Away from
    q = 1/2 the minimum moves outwards (q = 0.9: p* = 0.908) and is slightly negative
    (-3.3e-4 there). Unlike D_psp, the KL grows steeply as p nears 0 or 1.

Scheduled sampling
    At generation time the prior consumes its own samples; in training it is fed the
    posterior's. To make training look more like generation, FSVAE sometimes replaces the
    prior's input during training: for each step t >= 5 (0-based), with probability p (one
    coin per step for the whole batch), the input of step t+1 becomes the prior's own guess

        z_in[t+1] = 1[ mean_k p_z[t] + 0.001 * noise > 0.5 ]

    computed without gradient from the prior run on the inputs so far (replaced ones included).
    The guess is the most likely value, not a sample; the noise only breaks exact ties at 1/2
    (impossible for odd k). The probability rises with the epoch: p = 0.1 + 0.2 * epoch /
    epochs. Only in training mode; with p = 0 the prior sees exactly the posterior's samples.
    Because tdBN pools its statistics over time in training mode (lessons 04, 07), replacing
    late inputs changes the prior's output at *every* step, not only after step 5.

What this lesson checks (exit status 1 if any fails):
  * both distances on a T = 3 example worked out by hand (plain Python floats), and their
    reductions: mean over T, N, C for D_psp, sum over T, C and mean over N for D_kl;
  * the closed-form gradient of D_psp against autograd; both distances against central
    differences (``grad_check`` with spike="spike" on random rate tensors, q_z and p_z);
  * D_psp for constant rates is the parabola above; D_kl is 0 at p = q, has its minimum at
    p* = q (1 + 2 s) - s with the predicted (negative) value, and zero gradient there;
  * ``model.loss`` = MSE + 1 * D_psp, and = MSE + 1e-4 * D_kl with distance="kld";
  * the schedule: 0.1 at epoch 0, 0.2 half way, below 0.3 always;
  * scheduled_p = 1 replaces the inputs after step 5 by the prior's guesses, written out by
    hand here, and changes the output; scheduled_p = 0 and eval mode reproduce the plain prior.

Figures: ``08_distances.png`` (both distances as the prior rate moves away from the posterior's,
and the gradient each sends to the prior at the paper's sizes and weights) and ``08_scheduled_sampling.png`` (the schedule, the prior's inputs with
and without it, and which output steps change).

Run:  python lessons/08_losses_and_scheduled_sampling.py [--fast] [--out DIR] [--seed S]
"""
from __future__ import annotations

import math

import numpy as np

from _common import Checker, banner, parse_args, plt, save_figure, section, table

from snnvae import F, Tensor, data, gradcheck, nn, no_grad
from snnvae.models import FSVAE, FSVAEConfig

S = 0.01      # smoothing of the Bernoulli KL


def spikes_from_rates(rates, k):
    """Spike groups (..., k) whose means are the given rates (multiples of 1/k)."""
    rates = np.asarray(rates, dtype=np.float64)
    m = np.rint(rates * k).astype(int)
    return (np.arange(k) < m[..., None]).astype(np.float64)


def rate_tensor(r, T=1):
    """Constant rates r (any shape (N,)) as a (T, N, 1, 1) 'spike' tensor with k = 1."""
    r = np.asarray(r, dtype=np.float64)
    return np.broadcast_to(r[None, :, None, None], (T, len(r), 1, 1)).copy()


def kl_hand(q, p, s=S):
    return q * math.log((q + s) / (p + s)) + (1 - q) * math.log((1 - q + s) / (1 - p + s))


def main():
    args = parse_args(__doc__)
    rng = np.random.default_rng(args.seed)
    chk = Checker("lesson 08")
    banner("Lesson 08: losses and scheduled sampling")

    # -----------------------------------------------------------------------------------------
    section("1. both distances on a small example, by hand")
    k = 4
    rq, rp = [0.75, 0.5, 0.25], [0.25, 0.25, 0.5]        # T = 3, one sample, one channel
    q_z = spikes_from_rates(rq, k).reshape(3, 1, 1, k)
    p_z = spikes_from_rates(rp, k).reshape(3, 1, 1, k)
    syn_q = syn_p = 0.0
    sq = 0.0
    rows = []
    for t in range(3):
        syn_q += (rq[t] - syn_q) / 2
        syn_p += (rp[t] - syn_p) / 2
        sq += (syn_q - syn_p) ** 2
        rows.append([t, "".join(str(int(v)) for v in q_z[t, 0, 0]), rq[t], syn_q,
                     "".join(str(int(v)) for v in p_z[t, 0, 0]), rp[t], syn_p])
    table(rows, ["t", "q spikes", "r_q", "PSP(r_q)", "p spikes", "r_p", "PSP(r_p)"])
    psp_hand = sq / 3
    kl_sum = sum(kl_hand(a, b) for a, b in zip(rq, rp))
    d_psp = F.psp_mmd_loss(Tensor(q_z), Tensor(p_z)).item()
    d_kl = F.bernoulli_kld_loss(Tensor(q_z), Tensor(p_z)).item()
    print(f"  D_psp = (0.25^2 + 0.25^2 + 0^2) / 3 = {psp_hand:.6f}; library {d_psp:.6f}")
    print(f"  D_kl  = sum_t kl(r_q, r_p) = {kl_sum:.6f}; library {d_kl:.6f}")
    chk.close("D_psp on the T = 3 example = 0.125 / 3 (hand)", d_psp, 0.125 / 3, atol=1e-15)
    chk.close("D_kl on the T = 3 example = sum of the three smoothed KL terms (hand)", d_kl,
              kl_sum, atol=1e-14)
    # Reductions: a second identical sample leaves both unchanged (batch mean); a second
    # identical channel leaves D_psp unchanged (mean) and doubles D_kl (sum over C).
    two_n = [np.concatenate([a, a], axis=1) for a in (q_z, p_z)]
    two_c = [np.concatenate([a, a], axis=2) for a in (q_z, p_z)]
    chk.close("reductions: duplicating the sample leaves D_psp and D_kl unchanged",
              [F.psp_mmd_loss(*map(Tensor, two_n)).item(), F.bernoulli_kld_loss(*map(Tensor, two_n)).item()],
              [d_psp, d_kl], atol=1e-14)
    chk.close("reductions: duplicating the channel keeps D_psp, doubles D_kl (sum over C)",
              [F.psp_mmd_loss(*map(Tensor, two_c)).item(), F.bernoulli_kld_loss(*map(Tensor, two_c)).item()],
              [d_psp, 2 * d_kl], atol=1e-14)
    edge = F.bernoulli_kld_loss(Tensor(np.ones((1, 1, 1, 1))), Tensor(np.zeros((1, 1, 1, 1)))).item()
    chk.close("smoothing keeps the worst case finite: q = 1, p = 0 gives log(1.01 / 0.01)",
              edge, math.log(1.01 / 0.01), atol=1e-12)

    # -----------------------------------------------------------------------------------------
    section("2. gradients: closed form and finite differences")
    T, N, C, K = (4, 2, 3, 5) if args.fast else (8, 3, 4, 6)
    qa = Tensor(rng.uniform(size=(T, N, C, K)), requires_grad=True)
    pa = Tensor(rng.uniform(size=(T, N, C, K)), requires_grad=True)
    F.psp_mmd_loss(qa, pa).backward()
    d = np.zeros((T, N, C))
    diff = qa.data.mean(-1) - pa.data.mean(-1)
    for t in range(T):                                        # d = PSP(r_q - r_p)
        d[t] = (d[t - 1] if t else 0.0) + (diff[t] - (d[t - 1] if t else 0.0)) / 2
    g_r = np.zeros_like(d)
    for t in range(T):
        g_r[t] = sum(0.5 ** (u - t + 1) * d[u] for u in range(t, T)) * 2 / d.size
    chk.close("dD_psp/dq_z = (2/M) sum_{u>=t} (1/2)^(u-t+1) d_u / k (closed form vs autograd)",
              qa.grad, np.repeat(g_r[..., None] / K, K, axis=-1), atol=1e-15, rtol=1e-12)
    chk.close("dD_psp/dp_z = -dD_psp/dq_z (the prior is not detached)", pa.grad, -qa.grad,
              atol=1e-15)
    for name, fn in (("D_psp", F.psp_mmd_loss), ("D_kl", F.bernoulli_kld_loss)):
        res = gradcheck.grad_check(lambda: fn(qa, pa), [qa, pa], ["q_z", "p_z"], spike="spike")
        for r in res:
            print(f"  {name}: {r}")
        chk.grad_results(f"{name} vs central differences", res)

    # -----------------------------------------------------------------------------------------
    section("3. how each distance responds as the prior's rate moves away")
    Tc = 16
    p_grid = np.linspace(0.0, 1.0, 201 if args.fast else 1001)
    factor = np.mean((1 - 0.5 ** np.arange(1, Tc + 1)) ** 2)     # mean_t (1 - 2^-(t+1))^2
    curves = {}
    for q in (0.1, 0.5, 0.9):
        qz = Tensor(rate_tensor(np.full(len(p_grid), q), Tc))
        pz = Tensor(rate_tensor(p_grid, Tc), requires_grad=True)
        # Per element: D_psp is a mean over T N C; D_kl sums over T and C, so divide by T.
        # The sum over the batch of per-sample distances gives each sample's gradient at once.
        psp_total = F.psp_mmd_loss(qz, pz) * float(len(p_grid))
        psp_total.backward()
        g_psp = pz.grad[..., 0, 0].sum(axis=0).copy()
        pz.grad = None
        kl_total = F.bernoulli_kld_loss(qz, pz) * float(len(p_grid)) / Tc
        kl_total.backward()
        g_kl = pz.grad[..., 0, 0].sum(axis=0).copy()
        d2 = (q - p_grid) ** 2 * factor
        kl_vals = np.array([kl_hand(q, p) for p in p_grid])
        curves[q] = dict(psp=d2, kl=kl_vals, g_psp=g_psp, g_kl=g_kl)
        chk.close(f"q = {q}: D_psp = (q - p)^2 mean_t(1 - 2^-(t+1))^2 (sum over the grid)",
                  psp_total.item(), d2.sum(), rtol=1e-12)
        chk.close(f"q = {q}: per-element D_kl matches the hand formula over the grid",
                  kl_total.item(), kl_vals.sum(), rtol=1e-12)
        chk.close(f"q = {q}: autograd dD_psp/dp = -2 (q - p) * factor for every p",
                  g_psp, -2 * (q - p_grid) * factor, atol=1e-12)
    # The smoothed KL's minimum is not at p = q.
    q = 0.9
    p_star = q * (1 + 2 * S) - S
    kl_star = kl_hand(q, p_star)
    fine = np.linspace(0.85, 0.95, 100_001)
    vals = q * np.log((q + S) / (fine + S)) + (1 - q) * np.log((1 - q + S) / (1 - fine + S))
    print(f"  q = 0.9: smoothed KL at p = q is {kl_hand(q, q):.1e}; its minimum is at "
          f"p* = q(1 + 2s) - s = {p_star:.4f} with value {kl_star:.3e}")
    pz = Tensor(rate_tensor([q, p_star]), requires_grad=True)
    F.bernoulli_kld_loss(Tensor(rate_tensor([q, q])), pz).backward()
    g_at_q, g_at_star = pz.grad[0, :, 0, 0] * 2          # undo the batch mean (N = 2)
    chk.close("smoothed KL: 0 at p = q", kl_hand(q, q), 0.0, atol=1e-15)
    chk.check("smoothed KL: the grid minimum lies at p* = q(1 + 2s) - s, not at p = q",
              abs(fine[np.argmin(vals)] - p_star) < 2e-6, f"argmin {fine[np.argmin(vals)]:.5f}")
    chk.check("smoothed KL: its minimum is negative (KL proper never is)", kl_star < 0,
              f"{kl_star:.3e}")
    chk.check("smoothed KL: the library gradient in p vanishes at p*, not at p = q",
              abs(g_at_star) < 1e-12 and abs(g_at_q) > 1e-3,
              f"dD/dp at p* {g_at_star:.1e}, at q {g_at_q:.2e}")

    # -----------------------------------------------------------------------------------------
    section("4. the losses inside FSVAE")
    cfg = FSVAEConfig(hidden_channels=(8, 16), input_size=16, latent_dim=16, k=5,
                      timesteps=10 if args.fast else 16)
    model = FSVAE(cfg, rng=np.random.default_rng(args.seed))
    train_u8, _ = data.load_embedded_mnist("train")
    n_img = 16 if args.fast else 64
    images = data.prepare_images(train_u8[rng.choice(len(train_u8), n_img, replace=False)],
                                 size=cfg.input_size)
    with no_grad():
        out = model(images, rng=np.random.default_rng(args.seed))
        losses = model.loss(images, out)
        mse = F.mse_loss(out.reconstruction, Tensor(images)).item()
        dpsp = F.psp_mmd_loss(out.q_z, out.p_z).item()
        dkl = F.bernoulli_kld_loss(out.q_z, out.p_z).item()
    print(f"  untrained model on {n_img} digits: MSE {mse:.4f}, D_psp {dpsp:.5f}, D_kl {dkl:.3f}"
          f" (weighted 1e-4: {1e-4 * dkl:.5f})")
    chk.close("model.loss = MSE + 1 * D_psp (distance='mmd', the default)",
              [losses.loss.item(), losses.reconstruction.item(), losses.distance.item()],
              [mse + dpsp, mse, dpsp], rtol=1e-6)
    kld_model = FSVAE(cfg.replace(distance="kld"), rng=np.random.default_rng(args.seed))
    with no_grad():
        out_k = kld_model(images, rng=np.random.default_rng(args.seed))
        lk = kld_model.loss(images, out_k)
    chk.close("distance='kld': loss = MSE + 1e-4 * D_kl",
              lk.loss.item(), lk.reconstruction.item() + 1e-4 * lk.distance.item(), rtol=1e-6)

    # -----------------------------------------------------------------------------------------
    section("5. scheduled sampling")
    epochs = 150
    sched = np.array([FSVAE.scheduled_probability(e, epochs) for e in range(epochs)])
    print(f"  p(epoch) for {epochs} epochs: {sched[0]:.3f} at 0, {sched[75]:.3f} at 75, "
          f"{sched[-1]:.4f} at {epochs - 1}")
    chk.close("schedule: p = 0.1 + 0.2 epoch / epochs at epochs 0, 75, 149",
              sched[[0, 75, 149]], [0.1, 0.2, 0.1 + 0.2 * 149 / 150], atol=1e-15)
    chk.check("schedule: increasing and always below 0.3",
              np.all(np.diff(sched) > 0) and sched.max() < 0.3)

    prior, Tm = model.prior, cfg.timesteps
    z = out.z.data                                       # the posterior's samples (T, N, C)
    with no_grad():
        plain = prior(z).data
        sched_out = prior(z, scheduled_p=1.0, rng=np.random.default_rng(11)).data
        zero_out = prior(z, scheduled_p=0.0, rng=np.random.default_rng(11)).data
        # By hand: the inputs (0, z_0, .., z_{T-2}); for t = 5 .. T-2 the input of step t+1
        # becomes 1[mean_k p_z[t] > 0.5] from the prior run on the inputs so far. With k odd the
        # rate is never exactly 1/2, so the 0.001 noise cannot change a guess.
        z_in = np.zeros_like(z)
        z_in[1:] = z[:-1]
        for t in range(5, Tm - 1):
            p_t = prior.spikes(Tensor(z_in[:t + 1])).data[t]
            z_in[t + 1] = (p_t.mean(axis=-1) > 0.5).astype(z.dtype)
        hand_out = prior.spikes(Tensor(z_in)).data
    z_in_plain = np.zeros_like(z)
    z_in_plain[1:] = z[:-1]
    replaced = (z_in != z_in_plain).mean(axis=(1, 2))
    changed = (sched_out != plain).mean(axis=(1, 2, 3))
    print(f"  T = {Tm}, k = {cfg.k} (odd): inputs replaced at steps 6..{Tm - 1}")
    print(f"  fraction of input spikes that changed, per step: {np.round(replaced, 3)}")
    print(f"  fraction of output spikes that changed, per step: {np.round(changed, 3)}")
    chk.equal("scheduled_p = 1: output == prior run on the hand-made inputs (guesses from step 5)",
              sched_out, hand_out)
    chk.check("scheduled_p = 1: the inputs of steps 0..5 are untouched, later ones replaced",
              replaced[:6].sum() == 0 and replaced[6:].sum() > 0,
              f"changed: {replaced[:6].max():.0%} before step 6, {replaced[6:].mean():.0%} after")
    chk.check("scheduled_p = 1: the prior's output differs from the plain prior's",
              not np.array_equal(sched_out, plain), f"{changed.mean():.1%} of output spikes")
    chk.equal("scheduled_p = 0: exactly the plain prior", zero_out, plain)
    # Eval mode: first store real running statistics (one training call at momentum 1, as in
    # lesson 07), otherwise the eval prior is silent and the comparison proves nothing.
    nn.calibrate_running_statistics(prior, lambda: prior(z))
    model.eval()
    with no_grad():
        ev_plain = prior(z).data
        ev_sched = prior(z, scheduled_p=1.0, rng=np.random.default_rng(11)).data
    model.train()
    chk.check("eval mode (warmed-up statistics): the prior fires", 0 < ev_plain.mean() < 1,
              f"rate {ev_plain.mean():.3f}")
    chk.equal("eval mode: scheduled sampling is never applied", ev_sched, ev_plain)

    # -----------------------------------------------------------------------------------------
    # Panel 3: what the total loss sends to the prior rate of one channel of one sample (its
    # rate held at p over all T steps), at the paper's sizes T = 16, C = 128 and weights:
    # D_psp is a mean over T N C -> -2 (q - p) factor / C (times 1/N); D_kl sums over T and C
    # and is weighted 1e-4 -> 1e-4 T dkl/dp (times 1/N).
    C_paper = 128
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for q, style in zip(curves, ("-", "--", ":")):
        c = curves[q]
        axes[0].plot(p_grid, c["psp"], "C0" + style, label=f"q = {q}")
        axes[1].plot(p_grid, c["kl"], "C1" + style, label=f"q = {q}")
        axes[2].semilogy(p_grid, np.abs(c["g_psp"]) / C_paper, "C0" + style,
                         label=f"PSP, q = {q}")
        axes[2].semilogy(p_grid, 1e-4 * Tc * np.abs(c["g_kl"]), "C1" + style,
                         label=f"KL, q = {q}")
    axes[0].set(xlabel="prior rate p", ylabel="per element (T = 16, constant rates)",
                title="PSP distance: a parabola around p = q")
    axes[0].legend(fontsize=8, loc="upper center")
    axes[1].set(xlabel="prior rate p", ylabel="per (t, c) term",
                title="smoothed Bernoulli KL: steep near 0 and 1")
    axes[1].axhline(math.log(1.01 / 0.01), color="gray", ls=":", lw=1)
    axes[1].text(0.5, math.log(1.01 / 0.01) + 0.08, "log(1.01/0.01), the worst case",
                 ha="center", fontsize=7, color="gray")
    axes[1].set_ylim(-0.2, 5.2)
    axes[2].set(xlabel="prior rate p", ylabel="|d loss / d p| (per sample)",
                title="gradient on one channel (T=16, C=128, paper weights)",
                ylim=(1e-6, 1))
    axes[2].legend(fontsize=7, ncol=2, loc="lower center")
    ins = axes[1].inset_axes([0.32, 0.45, 0.36, 0.33])
    fine_c = (fine > 0.88) & (fine < 0.93)
    ins.plot(fine[fine_c], vals[fine_c], "C1")
    ins.axvline(q, color="k", lw=0.8, ls=":")
    ins.axvline(p_star, color="C3", lw=0.8)
    ins.axhline(0, color="gray", lw=0.5)
    ins.set_title("q = 0.9: minimum at p* = 0.908 (red)", fontsize=7)
    ins.tick_params(labelsize=6)
    save_figure(fig, args.out, "08_distances.png")

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(np.arange(epochs), sched)
    axes[0].set(xlabel="epoch", ylabel="p", ylim=(0, 0.35),
                title="scheduled-sampling probability 0.1 + 0.2 epoch / epochs")
    show = np.concatenate([z_in_plain[:, 0].T, np.full((1, Tm), 0.5), z_in[:, 0].T])
    axes[1].imshow(show, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    axes[1].axvline(5.5, color="C3", lw=1)
    axes[1].set(xlabel="step t", ylabel="channels: posterior z (top), with guesses (bottom)",
                title="prior inputs of one digit; guesses after the red line")
    axes[2].bar(np.arange(Tm), changed, color="C2")
    axes[2].axvline(5.5, color="C3", lw=1)
    axes[2].set(xlabel="step t", ylabel="fraction of prior spikes that changed",
                title="training mode: tdBN spreads the change to every step")
    save_figure(fig, args.out, "08_scheduled_sampling.png")

    chk.finish()


if __name__ == "__main__":
    main()
