"""Lesson 02: the leaky integrate-and-fire neuron, surrogate gradients and BPTT.

The neuron
    Every spiking layer of FSVAE ends in multi-step LIF neurons. For an input current x_t
    (t = 1..T; time is the FIRST axis of every spiking tensor, (T, N, ...)) each neuron runs

        u_t = tau * u_{t-1} * (1 - o_{t-1}) + x_t        u_0 = 0, o_0 = 0
        o_t = 1 if u_t > Vth else 0                       Vth = 0.2, tau = 0.25

    The membrane potential u leaks (multiplied by tau = 0.25 each step: tau is a leak
    *factor*, not a time constant), integrates the input, and after a spike the factor
    (1 - o_{t-1}) = 0 wipes it: a hard reset. The comparison is strict. A constant input c
    without spikes gives u_t = c (1 - tau^t) / (1 - tau), approaching c / 0.75, so
    c = 0.15 approaches Vth = 0.2 exactly from below and never fires, c = 0.18 fires every
    second step, c > 0.2 fires at every step.

The surrogate gradient
    o = H(u - Vth) has derivative 0 almost everywhere. Training replaces it in backward by a
    rectangle,  spike'(u) = 1[|u - c| < aa] / (2 aa),  aa = 0.5. FSVAE centres the window at
    c = 0, not at Vth (a quirk of its code that this library reproduces by default). With
    c = 0 a neuron with u > 0.5, i.e. one that fires strongly, gets no gradient through its
    own spike; with c = Vth the window is [-0.3, 0.7].

BPTT
    The reset makes the state at t depend on the spike at t-1, and that dependence is not
    detached. Differentiating the recurrence backwards in time (gu_{T+1} = 0):

        total dL/do_t = dL/do_t - tau * u_t * gu_{t+1}              (through the reset)
        gu_t          = total dL/do_t * spike'(u_t) + tau * (1 - o_t) * gu_{t+1}
        dL/dx_t       = gu_t

    ``snnvae`` computes this in one fused kernel per layer (``lif_backward``).

Checking BPTT: the smooth stand-in
    Finite differences through a step function are 0 or infinite. In ``spike_mode("smooth")``
    the neuron emits h(u) = clip((u - c) / (2 aa) + 1/2, 0, 1) instead, whose *exact*
    derivative is the surrogate. The forward is then differentiable and the same BPTT kernel
    must match central differences. Finally ``check_spiking_backward`` compares the real
    spiking backward with autograd run on the neuron unrolled step by step (straight-through
    spikes): two independent computations of the same gradient.

What this lesson checks (exit status 1 if any fails):
  * golden membrane traces computed by hand for constant inputs 0.15, 0.18 and 0.3;
  * a two-step BPTT example worked out by hand, for both window centres and a detached reset;
  * the fused kernel against the step-by-step autograd version, forward and backward;
  * BPTT over T >= 8 with spikes and resets against central differences (smooth mode);
  * spiking backward == straight-through autograd (``check_spiking_backward``);
  * NumPy reference kernel == Numba kernel, including a float32 tie at the threshold.

Figures: ``02_lif_traces.png`` (membrane traces and a spike raster),
``02_surrogate_and_bptt.png`` (stand-in and surrogate windows, BPTT vs finite differences).

Run:  python lessons/02_lif_neuron_and_bptt.py [--fast] [--out DIR] [--seed S]
"""
from __future__ import annotations

import numpy as np

from _common import Checker, banner, parse_args, plt, save_figure, section, table

from snnvae import F, Tensor, backend, gradcheck

VTH, TAU, AA = 0.2, 0.25, 0.5


def hand_lif(x, vth=VTH, tau=TAU):
    """The LIF recurrence for one neuron, written as plainly as possible (Python floats)."""
    u_prev, o_prev, us, os_ = 0.0, 0.0, [], []
    for xt in x:
        u = tau * u_prev * (1.0 - o_prev) + xt
        o = 1.0 if u > vth else 0.0
        us.append(u)
        os_.append(o)
        u_prev, o_prev = u, o
    return np.array(us), np.array(os_)


def fused_grad(x, **options):
    """dL/dx for L = sum_t o_t through F.lif (spike mode, fused BPTT kernel)."""
    xt = Tensor(np.asarray(x, dtype=np.float64).reshape(-1, 1), requires_grad=True)
    F.lif(xt, mode="spike", **options).sum().backward()
    return xt.grad.ravel()


def main():
    args = parse_args(__doc__)
    rng = np.random.default_rng(args.seed)
    chk = Checker("lesson 02")
    kernels = backend.kernels()
    banner("Lesson 02: the LIF neuron, surrogate gradients and BPTT")

    # -----------------------------------------------------------------------------------------
    section("1. golden traces for constant inputs (worked out by hand)")
    T = 16
    t = np.arange(1, T + 1)
    # c = 0.15: no spike ever, so u_t = c (1 - tau^t) / (1 - tau) = 0.2 (1 - 0.25^t) < Vth.
    expected_u = 0.2 * (1 - 0.25 ** t)
    x = np.full((T, 1), 0.15)
    o, u = kernels.lif_forward(x, VTH, TAU, AA, 0.0, False)
    rows = [[k, f"{u[k - 1, 0]:.8f}", f"{expected_u[k - 1]:.8f}", int(o[k - 1, 0])]
            for k in (1, 2, 3, 4, 8, 16)]
    table(rows, ["t", "u_t (kernel)", "0.2 (1 - 0.25^t)", "o_t"])
    chk.close("x = 0.15: u_t = 0.2 (1 - 0.25^t) for t = 1..16 (float64)", u[:, 0], expected_u,
              atol=1e-15, rtol=1e-12)
    chk.check("x = 0.15: u approaches Vth from below and never fires (strict u > Vth)",
              o.sum() == 0)
    # c = 0.18: u_1 = 0.18 (no spike), u_2 = 0.045 + 0.18 = 0.225 > 0.2 (spike),
    # u_3 = 0.25 * 0.225 * 0 + 0.18 = 0.18 (reset), ... period two.
    o, u = kernels.lif_forward(np.full((8, 1), 0.18, np.float32), VTH, TAU, AA, 0.0, False)
    print(f"  x = 0.18: u = {np.round(u[:, 0], 4)}  o = {o[:, 0].astype(int)}")
    chk.close("x = 0.18: u alternates 0.18, 0.225 (float32)", u[:, 0], [0.18, 0.225] * 4, rtol=1e-6)
    chk.equal("x = 0.18: spikes at t = 2, 4, 6, 8", o[:, 0], [0, 1] * 4)
    o, u = kernels.lif_forward(np.full((8, 1), 0.3, np.float32), VTH, TAU, AA, 0.0, False)
    chk.equal("x = 0.3: fires at every step (the reset erases the leak term)", o[:, 0], np.ones(8))
    xs = rng.normal(0.15, 0.2, size=12)
    hu, ho = hand_lif(xs)
    o, u = kernels.lif_forward(xs[:, None], VTH, TAU, AA, 0.0, False)
    chk.close("random input: kernel membrane = plain Python loop", u[:, 0], hu, atol=1e-15)
    chk.equal("random input: kernel spikes = plain Python loop", o[:, 0], ho)

    # -----------------------------------------------------------------------------------------
    section("2. membrane traces and a raster")
    T_plot = 24 if args.fast else 40
    drives = np.array([0.15, 0.18, 0.25, 0.5])
    x_demo = drives[None, :] + rng.normal(0, 0.05, size=(T_plot, len(drives)))
    o_demo, u_demo = kernels.lif_forward(x_demo, VTH, TAU, AA, 0.0, False)
    n_raster = 60
    x_raster = rng.normal(0.1, 0.2, size=(T_plot, n_raster))
    o_raster, _ = kernels.lif_forward(x_raster, VTH, TAU, AA, 0.0, False)
    print(f"  4 neurons with mean drive {drives}: spike counts over {T_plot} steps "
          f"{o_demo.sum(axis=0).astype(int)}")
    print(f"  raster of {n_raster} neurons with x ~ N(0.1, 0.2^2): firing rate "
          f"{o_raster.mean():.3f}")
    chk.check("stronger drive, more spikes (counts increase with the mean input)",
              np.all(np.diff(o_demo.sum(axis=0)) >= 0))
    fig, axes = plt.subplots(len(drives) + 1, 1, figsize=(9, 9), sharex=True,
                             gridspec_kw=dict(height_ratios=[1] * len(drives) + [2.5]))
    for i, ax in enumerate(axes[:-1]):
        ax.plot(np.arange(T_plot), u_demo[:, i], ".-", lw=1)
        ax.axhline(VTH, color="r", ls="--", lw=1)
        spikes = np.nonzero(o_demo[:, i])[0]
        ax.plot(spikes, u_demo[spikes, i], "r^", ms=6)
        ax.set_ylabel("u_t")
        ax.set_title(f"mean input {drives[i]}: {len(spikes)} spikes (red), Vth dashed", fontsize=9)
    tt, nn_ = np.nonzero(o_raster)
    axes[-1].plot(tt, nn_, "k|", ms=5)
    axes[-1].set(xlabel="time step t", ylabel="neuron", title="raster: x ~ N(0.1, 0.2^2) iid")
    save_figure(fig, args.out, "02_lif_traces.png")

    # -----------------------------------------------------------------------------------------
    section("3. BPTT by hand, T = 2, L = o_1 + o_2")
    # x = (0.3, 0.1): u_1 = 0.3 fires, u_2 = 0.25 * 0.3 * 0 + 0.1 = 0.1.
    #   t = 2: gu_2 = 1 * spike'(0.1) = 1                (window width 2 aa = 1 so spike' = 1)
    #   t = 1: total dL/do_1 = 1 - tau u_1 gu_2 = 1 - 0.25 * 0.3 = 0.925 (the reset path)
    #          gu_1 = 0.925 * spike'(0.3) + tau (1 - o_1) gu_2 = 0.925 + 0 = 0.925
    g = fused_grad([0.3, 0.1])
    print(f"  x = (0.3, 0.1), window at 0:   dL/dx = {g}   (hand: 0.925, 1)")
    chk.close("x = (0.3, 0.1): dL/dx = (0.925, 1)", g, [0.925, 1.0], atol=1e-12)
    g = fused_grad([0.3, 0.1], detach_reset=True)
    chk.close("... with the reset detached the reset path vanishes: (1, 1)", g, [1.0, 1.0], atol=1e-12)
    # x = (0.6, 0.1): u_1 = 0.6 lies outside the window |u| < 0.5 centred at 0, so spike'(0.6) = 0
    # and the strongly firing neuron gets no gradient at t = 1. Centred at Vth it does: 0.85.
    g0 = fused_grad([0.6, 0.1])
    gv = fused_grad([0.6, 0.1], window_center=VTH)
    print(f"  x = (0.6, 0.1), window at 0:   dL/dx = {g0}   (hand: 0, 1)")
    print(f"  x = (0.6, 0.1), window at Vth: dL/dx = {gv}   (hand: 1 - 0.25*0.6 = 0.85, 1)")
    chk.close("x = (0.6, 0.1), window at 0: dL/dx = (0, 1)", g0, [0.0, 1.0], atol=1e-12)
    chk.close("x = (0.6, 0.1), window at Vth: dL/dx = (0.85, 1)", gv, [0.85, 1.0], atol=1e-12)

    # -----------------------------------------------------------------------------------------
    section("4. the fused kernel vs the neuron unrolled in autograd primitives")
    T_chk, M = (8, 6) if args.fast else (16, 24)
    mu, sd = 0.2, 0.5
    x_np = rng.normal(mu, sd, size=(T_chk, M))
    x_np[::2, 0] -= 1.0      # neuron 0: strongly negative now and then (smooth output 0)
    x_np[::3, 1] += 1.0      # neuron 1: strong pulses (smooth output 1, a full reset)
    w_np = rng.normal(size=(T_chk, M))           # a random linear read-out makes dL/do_t varied
    xa = Tensor(x_np.copy(), requires_grad=True)
    o_fused = F.lif(xa, mode="spike")
    o_unrolled, u_unrolled = F.lif_unrolled(Tensor(x_np), F.LIFParams())
    _, u_kernel = kernels.lif_forward(x_np, VTH, TAU, AA, 0.0, False)
    chk.equal("spikes: fused kernel == unrolled loop", o_fused.data, o_unrolled.data)
    chk.close("membrane: fused kernel == unrolled loop", u_kernel, u_unrolled.data, atol=1e-15)
    fires = o_fused.data.mean()
    print(f"  T = {T_chk}, {M} neurons, x ~ N({mu}, {sd}^2): firing rate {fires:.2f}, "
          f"{int(o_fused.data.sum())} spikes")
    chk.check("the test input makes neurons fire and reset (firing rate between 0.1 and 0.9)",
              0.1 < fires < 0.9, f"rate {fires:.2f}")

    section("5. BPTT against central differences (smooth stand-in)")
    with F.spike_mode("smooth"):
        o_smooth = F.lif(Tensor(x_np), mode=None).data
    at_one, at_zero = (o_smooth == 1).mean(), (o_smooth == 0).mean()
    print(f"  smooth mode outputs h(u): {at_one:.0%} at 1 (full reset), {at_zero:.0%} at 0, "
          f"{1 - at_one - at_zero:.0%} in between (the linear part of the window)")
    chk.check("the smooth forward visits all three regimes (0, ramp, 1)",
              at_one > 0.03 and at_zero > 0.03 and at_one + at_zero < 0.97)
    configs = [("window at 0 (default)", {}),
               ("window at Vth", {"window_center": VTH}),
               ("reset detached", {"detach_reset": True})]
    scatter = None
    for label, opts in configs[:2]:
        xa = Tensor(x_np.copy(), requires_grad=True)
        res = gradcheck.grad_check(lambda: (F.lif(xa, **opts) * Tensor(w_np)).sum(), [xa], ["x"])
        print(f"  {label:22s} " + str(res[0]))
        chk.grad_results(f"BPTT, T={T_chk}, {label}", res)
        if scatter is None:
            idx = np.arange(xa.size)
            numeric = gradcheck.numerical_grad(
                lambda: (F.lif(xa, mode="smooth") * Tensor(w_np)).sum(), xa, idx)
            scatter = (xa.grad.ravel().copy(), numeric)
    # Detaching the reset is a deliberate approximation: backward ignores a path that the
    # forward still has, so the result is NOT the derivative of the forward pass and central
    # differences must disagree with it. (check_spiking_backward below still checks that the
    # kernel computes the detached recurrence it claims to.)
    xa = Tensor(x_np.copy(), requires_grad=True)
    res = gradcheck.grad_check(lambda: (F.lif(xa, detach_reset=True) * Tensor(w_np)).sum(),
                               [xa], ["x"])
    print(f"  {'reset detached':22s} max abs difference from central differences "
          f"{res[0].max_abs_error:.2e}: a biased gradient, as expected")
    chk.check("detached reset: the gradient differs from the true derivative (as designed)",
              not res[0].passed, f"max abs difference {res[0].max_abs_error:.2f}")
    # The same smooth network built purely from autograd primitives gives the same gradient.
    xa = Tensor(x_np.copy(), requires_grad=True)
    with F.spike_mode("smooth"):
        (F.lif(xa) * Tensor(w_np)).sum().backward()
    g_fused = xa.grad.copy()
    xa.zero_grad()
    o_auto, _ = F.lif_unrolled(xa, F.LIFParams(), spike_fn=lambda u: F.smooth_spike(u))
    (o_auto * Tensor(w_np)).sum().backward()
    chk.close("smooth mode: fused BPTT kernel == autograd through the unrolled smooth neuron",
              g_fused, xa.grad, atol=1e-13)

    section("6. spiking backward == straight-through autograd")
    for label, opts in configs:
        xa = Tensor(x_np.copy(), requires_grad=True)
        res = gradcheck.check_spiking_backward(
            lambda: (F.lif(xa, **opts) * Tensor(w_np)).sum(), [xa], ["x"])
        print(f"  {label:22s} " + str(res[0]))
        chk.grad_results(f"spike vs straight-through, {label}", res)

    # -----------------------------------------------------------------------------------------
    section("7. NumPy reference kernel vs Numba kernel (float32)")
    M_big = 2000 if args.fast else 20000
    xb = rng.normal(0.1, 0.3, size=(T_chk, M_big)).astype(np.float32)
    gb = rng.normal(size=(T_chk, M_big)).astype(np.float32)
    ref, fast = backend.kernels("numpy"), backend.kernels("cpu")
    for smooth in (False, True):
        o_r, u_r = ref.lif_forward(xb, VTH, TAU, AA, 0.0, smooth)
        o_c, u_c = fast.lif_forward(xb, VTH, TAU, AA, 0.0, smooth)
        kind = "smooth" if smooth else "spike"
        chk.close(f"lif_forward ({kind}): membrane equal", u_c, u_r, atol=1e-6, rtol=1e-6)
        chk.close(f"lif_forward ({kind}): outputs equal", o_c, o_r, atol=1e-6, rtol=1e-6)
        g_r = ref.lif_backward(gb, u_r, o_r, TAU, AA, 0.0, False)
        g_c = fast.lif_backward(gb, u_c, o_c, TAU, AA, 0.0, False)
        chk.close(f"lif_backward ({kind}): BPTT gradients equal", g_c, g_r, atol=1e-5, rtol=1e-5)
    # A tie at the threshold: in float32, 0.15 is stored as 0.150000006 and u converges to
    # float32(0.2) itself after a dozen steps. The comparison u > Vth must happen in the
    # array's dtype (float32(0.2) > float32(0.2) is false, as in NumPy and PyTorch); a kernel
    # that computes u or compares in float64 sees 0.2000000079 > 0.2 and fires spuriously.
    x_tie = np.full((40, 1), 0.15, np.float32)
    tie = [k.lif_forward(x_tie, VTH, TAU, AA, 0.0, False) for k in (ref, fast)]
    print(f"  float32 input 0.15 for 40 steps: u_40 = {tie[0][1][-1, 0]!r}; spikes numpy "
          f"{int(tie[0][0].sum())}, numba {int(tie[1][0].sum())}")
    chk.check("float32 tie at the threshold: neither backend fires (comparison in float32)",
              tie[0][0].sum() == 0 and tie[1][0].sum() == 0)

    # -----------------------------------------------------------------------------------------
    uu = np.linspace(-1.0, 1.2, 441)
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4))
    for c, style, name in [(0.0, "-", "centre 0 (FSVAE)"), (VTH, "--", "centre Vth")]:
        h = np.clip((uu - c) / (2 * AA) + 0.5, 0, 1)
        ax1.plot(uu, h, style, label=f"h(u), {name}")
        ax2.plot(uu, (np.abs(uu - c) < AA) / (2 * AA), style, label=f"spike'(u), {name}")
    ax1.step(uu, (uu > VTH).astype(float), "k", lw=1, where="post", label="spike H(u - Vth)")
    for ax in (ax1, ax2):
        ax.axvline(VTH, color="r", lw=0.8, ls=":")
        ax.set_xlabel("membrane u")
        ax.legend(fontsize=8, loc="upper left")
    ax1.set_title("forward: spike and its smooth stand-ins")
    ax2.set_title("backward: rectangular surrogate (width 2 aa = 1)")
    ax2.set_ylim(-0.1, 1.4)
    analytic, numeric = scatter
    ax3.plot(numeric, analytic, "o", ms=4, mfc="none")
    lim = np.abs(np.concatenate([numeric, analytic])).max() * 1.05
    ax3.plot([-lim, lim], [-lim, lim], "k:", lw=1)
    ax3.set(xlabel="central difference dL/dx_t", ylabel="BPTT kernel dL/dx_t",
            title=f"BPTT vs finite differences (T={T_chk}, smooth mode)")
    save_figure(fig, args.out, "02_surrogate_and_bptt.png")

    chk.finish()


if __name__ == "__main__":
    main()
