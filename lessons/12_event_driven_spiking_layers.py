"""Lesson 12: event-driven spiking layers: adding weights only where the spikes are.

A spiking layer needs no multiplications
    Behind every LIF layer of FSVAE the next weighted layer receives spikes: every input value
    is 0 or 1. For one row s (one image at one time step; a layer sees M = T*N such rows,
    (M, F_in)) a linear layer computes

        y = b + W s = b + sum_i s_i W[:, i] = b + sum_{i : s_i = 1} W[:, i]

    Multiplying by 1 changes nothing and multiplying by 0 gives nothing, so y is the bias plus
    the columns of W that belong to the active inputs, added up. A dense kernel does
    F_in * F_out multiply-adds per row whatever the input; the event-driven kernel looks at
    each input once and, for each spike, adds one column: (spikes) * F_out additions. Its cost
    is proportional to the firing rate r:

        dense:  M F_in F_out multiply-adds          event:  r M F_in F_out additions
                                                            + M F_in tests + the weight layout

    A convolution read backwards is the same. The dense (gather) form sums, for each output,
    the inputs under the kernel; the event form (scatter) takes each input spike at (c, h, v)
    and adds the kernel slice w[:, c, p, q] (all C_out channels at once) to every output (i, j)
    it reaches: those with h = i s - pad + p and v = j s - pad + q. A spike reaches about
    (k / s)^2 outputs: 9 for a 3x3 conv at stride 1, 2.25 at stride 2, fewer at the borders.
    Summed over the spikes this is exactly the "AC" count of ``snnvae.metrics.operations``, the
    number that the papers' energy estimate multiplies by 0.9 pJ (a multiply-add: 4.6 pJ).

    The weights are stored the way an event reads them: W transposed to (F_in, F_out), so that
    an input's column is one contiguous row, and the conv kernel as (C_in, kh, kw, C_out), so
    that each (spike, kernel offset) adds one contiguous vector of C_out values. The results
    equal the dense ones up to rounding (the additions happen in another order).

Where it pays off, and where dense BLAS wins
    Counting operations is not counting time. A BLAS matrix product keeps blocks of W and of
    the input in registers and caches and reuses each loaded weight for many rows: on a CPU it
    runs at tens of floating-point operations per cycle. The event kernel uses a weight row
    once per event, for one output row: a load of the weight, a load and a store of the sum for
    every addition. Measured below, one of its additions costs four to five times what a
    multiply-add costs inside BLAS, and it also pays for looking at every silent input and for
    re-laying out the weights. So it wins only below a break-even firing rate: about 0.1 to 0.2
    on a 2-core CPU (0.10-0.12 for the linear layer, 0.14-0.16 for the conv in quiet runs; at
    rate 0.5 the event kernel is about 2.5 times slower than BLAS). Clustered spikes, as in a
    digit's strokes, ran faster than random ones at the same rate (section 4), probably because
    the test "is this input silent?" is then predicted well by the processor.

    Spiking layers do fire at rates of that order (the untrained FSVAE encoder layer of section
    4 at about 0.1; lesson 09 prints the rates of a trained FSVAE's blocks): sparse layers pay
    off, busy ones and small ones (where the fixed costs dominate) do not. The first layer sees
    a real-valued image, not spikes, and stays dense; so does the input gradient of every
    backward pass, real gradients times real weights (only the weight gradient, gy^T s, has
    spikes in it). On hardware without a multiplier (neuromorphic chips) the event
    form is the only one, and there the argument is energy: additions, and only where there are
    spikes. On a GPU, where tensor cores do the dense product, expect the break-even to be lower
    still (not measured here).

A layer re-run on an input that barely changed: delta updates
    The same idea works on changes instead of spikes. FSVAE's posterior, in training, is run
    again on every longer prefix of the sequence (the official sampling loop, O(T^2)): each run
    normalises with the batch statistics of its own prefix, so the spikes of the rows seen
    before move a little, and only a little (1-10 % of the spikes feeding a layer flip from one
    prefix to the next). Keeping y = W x_old from the last run, the outputs for x_new are

        y_new = y + W (x_new - x_old) = y + sum_{i : x_new_i != x_old_i} (x_new_i - x_old_i) W[:, i]

    one column of W added or subtracted per flipped input, and nothing for the rest. Section 5
    times it against the dense product at several flip fractions (``linear_delta_into``;
    ``snnvae.latent.bernoulli._PrefixNetwork`` uses it in the model).

In ``snnvae``: ``snnvae/kernels/event_driven.py``: ``event_linear_forward``,
``event_conv2d_forward`` (same arguments as ``linear_forward`` and ``conv2d_forward`` of
``numpy_ref``), ``firing_rate``, ``check_binary``; the dense kernels of ``snnvae.kernels.cpu``
(the BLAS matrix product; im2col + BLAS for the conv) for the comparison. The models
themselves use the event-driven idea where it paid off in training: the transposed
convolutions of the decoder (``conv_transpose2d_forward`` in ``snnvae.kernels.cpu`` scatters
the weights of the active inputs when fewer than 20 % are nonzero), and the delta form of
section 5 in FSVAE's training-mode posterior.

What this lesson checks (exit status 1 if any fails):
  * a linear layer by hand: W s is the sum of the active columns;
  * a lone spike in a conv stamps the kernel, flipped, around itself; at stride 2 it reaches
    only the outputs of the reach table;
  * the number of additions of the event conv equals the AC count of snnvae.metrics;
  * event == dense (NumPy reference and Numba) on random spikes at rates 0 to 1, float32 and
    float64, and on the real spikes of an FSVAE encoder layer fed with MNIST digits;
  * non-binary input is refused with a ValueError;
  * at the FSVAE paper's layer shapes, at every firing rate timed, the event-driven result
    equals the dense one at float32 tolerance. (The timings themselves are reported, not
    checked: they depend on the machine and its load.)
  * a delta update moves y = W x_old to W x_new (NumPy reference and Numba), by hand on one
    row and at every flip fraction timed.

Figures: ``12_dense_vs_event.png`` (time against firing rate for both layers, the break-even
rates, and the real encoder spikes' point); ``12_delta_update.png`` (dense product against
delta update, time against the fraction of inputs that changed).

Run:  python lessons/12_event_driven_spiking_layers.py [--fast] [--out DIR] [--seed S]
"""
from __future__ import annotations

import time

import numpy as np
from matplotlib.ticker import ScalarFormatter

from _common import Checker, banner, parse_args, plt, save_figure, section, table

from snnvae import Tensor, nn, no_grad
from snnvae.data import load_embedded_mnist, to_signed_unit
from snnvae.kernels import cpu, numpy_ref
from snnvae.kernels.event_driven import (check_binary, event_conv2d_forward,
                                         event_linear_forward, firing_rate,
                                         linear_delta_into)
from snnvae.metrics.operations import count_operations

F32 = dict(rtol=1e-5, atol=1e-5)        # "equal at float32 tolerance"


def best_times(fns, repeats):
    """Best of ``repeats`` wall-clock times in ms of each fn(), after one warm-up call each
    (which compiles or loads the Numba code). The functions take turns, so that a burst of
    other work on the machine slows both sides alike; the minimum is the least disturbed run."""
    for fn in fns:
        fn()
    best = [np.inf] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - start)
    return [t * 1e3 for t in best]


def spikes(rng, shape, rate):
    return (rng.random(shape) < rate).astype(np.float32)


def break_even(rates, event_ms, dense_ms):
    """The firing rate where the event time reaches the dense time, by linear interpolation
    between the two measured rates around it. Returns (rate, text): (None, "below ...") when the
    event kernel is slower already at the lowest rate, (None, "above ...") when never."""
    slower = [k for k, t in enumerate(event_ms) if t >= dense_ms]
    if not slower:
        return None, f"above {rates[-1]:.2f} (event faster at every rate measured)"
    k = slower[0]
    if k == 0:
        return None, f"below {rates[0]:.2f} (event slower at every rate measured)"
    r0, r1, t0, t1 = rates[k - 1], rates[k], event_ms[k - 1], event_ms[k]
    r = r0 + (dense_ms - t0) * (r1 - r0) / (t1 - t0)
    return r, f"{r:.3f}"


def main():
    args = parse_args(__doc__)
    rng = np.random.default_rng(args.seed)
    chk = Checker("lesson 12")
    banner("Lesson 12: event-driven spiking layers")

    # -----------------------------------------------------------------------------------------
    section("1. a linear layer by hand: W s adds the columns of the active inputs")
    W = np.array([[1.0, 2.0, 3.0, 4.0],
                  [10.0, 20.0, 30.0, 40.0],
                  [-1.0, 0.5, -2.0, 0.25]])                 # (F_out = 3, F_in = 4)
    s = np.array([[1.0, 0.0, 1.0, 1.0]])                     # inputs 0, 2, 3 spike
    y = event_linear_forward(s, W, None)
    by_hand = W[:, 0] + W[:, 2] + W[:, 3]                    # [8, 80, -2.75]: no product at all
    print(f"  s = {s[0]}  ->  W s = {y[0]}  =  W[:, 0] + W[:, 2] + W[:, 3] = {by_hand}")
    chk.equal("event linear == sum of the active columns [8, 80, -2.75]", y[0], by_hand)
    chk.equal("event linear == dense s @ W.T", y, numpy_ref.linear_forward(s, W, None))

    # -----------------------------------------------------------------------------------------
    section("2. a convolution by scattering")
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 1.0                                      # one spike in the middle
    k = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    y = event_conv2d_forward(x, k, None, 1, 1)[0, 0]
    print(f"  a lone spike at (2, 2), kernel\n{k[0, 0]}\n  stride 1, padding 1 ->\n{y}")
    stamp = np.zeros((5, 5))
    stamp[1:4, 1:4] = k[0, 0, ::-1, ::-1]
    chk.equal("a lone spike stamps the kernel flipped around it (conv = correlation)", y, stamp)
    # At stride 2 on a 16-pixel row (pad 1, Ho = 8) input h reaches output i = (h + 1 - p) / 2
    # when that is an integer: even h through p = 1 only, odd h through p = 0 and p = 2.
    reach = [[i for p in range(3) if (h + 1 - p) % 2 == 0 and 0 <= (i := (h + 1 - p) // 2) < 8]
             for h in range(16)]
    print("  stride 2, pad 1, 16 -> 8: input row h reaches output rows "
          + ", ".join(f"{h}:{r}" for h, r in enumerate(reach[:6])) + ", ...")
    xs = np.zeros((1, 1, 16, 16))
    xs[0, 0, 5, 8] = 1.0
    ys = event_conv2d_forward(xs, np.ones((1, 1, 3, 3)), None, 2, 1)[0, 0]
    hit = {(int(i), int(j)) for i, j in zip(*np.nonzero(ys))}
    chk.check("stride 2: a spike at (5, 8) reaches outputs rows {2, 3} x columns {4}",
              hit == {(i, j) for i in reach[5] for j in reach[8]} == {(2, 4), (3, 4)},
              f"reached {sorted(hit)}")
    print(f"  mean reach of an input pixel at stride 2: "
          f"{np.mean([len(r) for r in reach]) ** 2:.2f} outputs (against 9 at stride 1)")

    # The additions the kernel makes, counted by running it with every weight 1 and no bias
    # (each output then counts the additions made into it), against snnvae.metrics' AC count.
    T_r, N_r = (4, 4) if args.fast else (16, 16)
    images, _ = load_embedded_mnist("test")
    digits = to_signed_unit(images[:N_r])
    digits = np.pad(digits, ((0, 0), (0, 0), (2, 2), (2, 2)), constant_values=-1.0)
    first = nn.SpikingConv2d(1, 32, 3, stride=2, padding=1, rng=np.random.default_rng(args.seed))
    with no_grad():                                          # FSVAE's first encoder block
        enc_spikes = first(Tensor(np.repeat(digits[None], T_r, axis=0))).data
    real = enc_spikes.reshape(T_r * N_r, 32, 16, 16)          # (T*N, 32, 16, 16), free reshape
    conv = nn.Conv2d(32, 64, 3, stride=2, padding=1, rng=np.random.default_rng(args.seed + 1))
    counts = count_operations(nn.Sequential(conv, nn.LIF()), real, rng,
                              forward=lambda m, xb, r: m(Tensor(xb)))
    ac_total = counts["layers"]["0"]["ac"] * real.shape[0]   # counts are per image
    ones = np.ones((64, 32, 3, 3))
    adds = event_conv2d_forward(real, ones, None, 2, 1).sum()
    macs = event_conv2d_forward(np.ones_like(real), ones, None, 2, 1).sum()  # every input on
    print(f"  real encoder spikes {real.shape}, rate {firing_rate(real):.3f}: the event conv "
          f"32 -> 64 makes {adds:,.0f} additions; snnvae.metrics counts {ac_total:,.0f} ACs; "
          f"a dense conv makes {macs:,.0f} multiply-adds ({adds / macs:.3f} of them)")
    chk.check("additions made by the event conv == snnvae.metrics' AC count", adds == ac_total,
              f"{adds:.0f} vs {ac_total:.0f}")

    # -----------------------------------------------------------------------------------------
    section("3. event-driven == dense on random spikes")
    for dtype in (np.float32, np.float64):
        tol = F32 if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
        worst = {"linear": 0.0, "conv": 0.0}
        ok = {"linear": True, "conv": True}
        for rate in (0.0, 0.05, 0.3, 1.0):
            xl = spikes(rng, (24, 40), rate).astype(dtype)
            wl, bl = rng.normal(size=(30, 40)).astype(dtype), rng.normal(size=30).astype(dtype)
            xc = spikes(rng, (4, 6, 9, 8), rate).astype(dtype)
            wc, bc = rng.normal(size=(7, 6, 3, 3)).astype(dtype), rng.normal(size=7).astype(dtype)
            pairs = [("linear", event_linear_forward(xl, wl, bl),
                      numpy_ref.linear_forward(xl, wl, bl)),
                     ("linear", event_linear_forward(xl, wl, None),
                      cpu.linear_forward(xl, wl, None))]
            for stride, pad in ((1, 1), (2, 1), (2, 0)):
                pairs += [("conv", event_conv2d_forward(xc, wc, bc, stride, pad),
                           numpy_ref.conv2d_forward(xc, wc, bc, stride, pad)),
                          ("conv", event_conv2d_forward(xc, wc, None, stride, pad),
                           cpu.conv2d_forward(xc, wc, None, stride, pad))]
            for kind, got, want in pairs:
                worst[kind] = max(worst[kind], float(np.abs(got - want).max()))
                ok[kind] &= got.dtype == want.dtype and np.allclose(got, want, **tol)
        for kind in ("linear", "conv"):
            chk.check(f"{np.dtype(dtype).name} {kind}: event == numpy_ref and cpu kernels at "
                      f"rates 0, 0.05, 0.3, 1 (with and without bias)", ok[kind],
                      f"max abs err {worst[kind]:.1e}")
    bad = spikes(rng, (2, 8), 0.5)
    bad[1, 3] = 0.7
    try:
        event_linear_forward(bad, np.ones((3, 8), np.float32), None)
        refused, why = False, "no error"
    except ValueError as err:
        refused, why = "binary" in str(err), str(err)
    print(f"  a 0.7 among the spikes: ValueError: {why}")
    chk.check("non-binary input is refused with a ValueError that says so", refused)
    check_binary(real)                                       # the real spikes are binary

    # -----------------------------------------------------------------------------------------
    section("4. time against firing rate, at FSVAE's paper shapes")
    rates = [0.02, 0.1, 0.5] if args.fast else [0.01, 0.02, 0.05, 0.1, 0.2, 0.5]
    repeats = 2 if args.fast else 7
    if args.fast:    # small stand-ins, so that the test suite stays quick
        lin_shape, conv_shape = (128, 128, 640), (32, 8, 16, 16, 16)
    else:            # posterior's last layer 512 -> 2560 over T = 16 steps of 64 images;
        # encoder conv 32 -> 64, 3x3, stride 2 on 16 x 16 maps, T * N = 16 * 16 = 256
        lin_shape, conv_shape = (16 * 64, 512, 2560), (256, 32, 64, 16, 16)
    M, F_in, F_out = lin_shape
    B, C_in, C_out, H, W_ = conv_shape
    w_lin = (rng.normal(size=(F_out, F_in)) / np.sqrt(F_in)).astype(np.float32)
    b_lin = rng.normal(size=F_out).astype(np.float32)
    w_conv = (rng.normal(size=(C_out, C_in, 3, 3)) / np.sqrt(9 * C_in)).astype(np.float32)
    b_conv = rng.normal(size=C_out).astype(np.float32)
    layers = {
        "linear": dict(title=f"linear {F_in} -> {F_out}, M = {M} rows",
                       shape=(M, F_in), macs=M * F_in * F_out,
                       dense=lambda s: cpu.linear_forward(s, w_lin, b_lin),
                       event=lambda s: event_linear_forward(s, w_lin, b_lin)),
        "conv": dict(title=f"conv {C_in} -> {C_out} 3x3 s2, {B} x {H}x{W_} maps",
                     shape=(B, C_in, H, W_), macs=None,
                     dense=lambda s: cpu.conv2d_forward(s, w_conv, b_conv, 2, 1),
                     event=lambda s: event_conv2d_forward(s, w_conv, b_conv, 2, 1))}
    layers["conv"]["macs"] = int(event_conv2d_forward(np.ones((1, C_in, H, W_), np.float32),
                                                      np.ones((C_out, C_in, 3, 3)), None,
                                                      2, 1).sum()) * B   # padding excluded
    results = {}
    for name, L in layers.items():
        print(f"\n  {L['title']}: dense = {L['macs'] / 1e6:,.0f} M multiply-adds at any rate")
        rows, d_ms, e_ms, measured = [], [], [], []
        for rate in rates:
            s_in = spikes(rng, L["shape"], rate)
            yd, ye = L["dense"](s_in), L["event"](s_in)
            equal = bool(np.allclose(ye, yd, **F32))
            chk.check(f"{name} at rate {rate}: event == dense (float32 tolerance)", equal,
                      f"max abs err {np.abs(ye - yd).max():.1e}")
            td, te = best_times([lambda: L["dense"](s_in), lambda: L["event"](s_in)], repeats)
            r = firing_rate(s_in)
            d_ms.append(td)
            e_ms.append(te)
            measured.append(r)
            rows.append([f"{rate:g}", f"{r:.4f}", f"{r * L['macs'] / 1e6:,.1f}", f"{td:.2f}",
                         f"{te:.2f}", f"{td / te:.2f}x", "yes" if equal else "NO"])
        table(rows, ["rate", "measured", "adds (M)", "dense ms", "event ms", "speed-up", "equal"])
        # The dense time does not depend on the rate (BLAS multiplies the zeros too): its best
        # over all rates is the least disturbed measurement of one and the same computation.
        dense_ref = min(d_ms)
        b, a = np.polyfit(measured, e_ms, 1)
        r_star, text = break_even(measured, e_ms, dense_ref)
        print(f"  dense {dense_ref:.2f} ms (best at any rate); event ~ {a:.2f} ms + {b:.1f} ms x "
              f"rate (least-squares line) -> break-even firing rate {text}")
        results[name] = dict(rates=measured, dense=d_ms, event=e_ms, dense_ref=dense_ref,
                             r_star=r_star, a=a, b=b)
    print("\n  (best of %d alternating runs each; both sides use all cores: BLAS threads for "
          "dense, Numba's prange for event. On a busy machine the numbers move; the checks do "
          "not use them.)" % repeats)

    # The real encoder spikes of section 2 through the same conv, at their own rate.
    real_rate = firing_rate(real)
    wr = (rng.normal(size=(64, 32, 3, 3)) / np.sqrt(288)).astype(np.float32)
    yd = cpu.conv2d_forward(real, wr, None, 2, 1)
    ye = event_conv2d_forward(real, wr, None, 2, 1)
    chk.check("real encoder spikes: event conv == dense conv (float32 tolerance)",
              np.allclose(ye, yd, **F32), f"max abs err {np.abs(ye - yd).max():.1e}")
    td_real, te_real = best_times([lambda: cpu.conv2d_forward(real, wr, None, 2, 1),
                                   lambda: event_conv2d_forward(real, wr, None, 2, 1)], repeats)
    print(f"\n  real spikes of an (untrained) FSVAE encoder layer on {N_r} digits x {T_r} steps, "
          f"rate {real_rate:.3f}: conv 32 -> 64 dense {td_real:.2f} ms, event {te_real:.2f} ms "
          f"({td_real / te_real:.2f}x)")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (name, R) in zip(axes, results.items()):
        ax.plot(R["rates"], R["dense"], "o-", label="dense (BLAS)")
        ax.axhline(R["dense_ref"], color="C0", lw=0.8, ls=":", label="dense, best at any rate")
        ax.plot(R["rates"], R["event"], "s-", label="event-driven")
        grid = np.linspace(min(R["rates"]), max(R["rates"]), 100)
        ax.plot(grid, R["a"] + R["b"] * grid, ":", color="C1", label="fit a + b rate")
        if R["r_star"]:
            ax.axvline(R["r_star"], color="gray", ls="--",
                       label=f"break-even {R['r_star']:.3f}")
        if name == "conv" and B == real.shape[0]:
            ax.plot([real_rate], [te_real], "*", ms=13, color="C3",
                    label=f"real encoder spikes ({real_rate:.2f})")
        ax.set(xscale="log", yscale="log", xlabel="firing rate of the input",
               ylabel="forward time (ms)", title=layers[name]["title"])
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(ScalarFormatter())
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    save_figure(fig, args.out, "12_dense_vs_event.png")

    # -----------------------------------------------------------------------------------------
    section("5. a layer re-run on an input that barely changed: delta updates")
    x_old = np.array([[1.0, 0.0, 1.0, 1.0]])
    x_new = np.array([[1.0, 1.0, 1.0, 0.0]])                 # input 1 starts, input 3 stops
    y = numpy_ref.linear_forward(x_old, W, None)
    by_hand = y[0] + W[:, 1] - W[:, 3]
    linear_delta_into(y, x_new, x_old, np.ascontiguousarray(W.T))
    print(f"  W x_old = {numpy_ref.linear_forward(x_old, W, None)[0]}; inputs 1 on, 3 off -> "
          f"+ W[:, 1] - W[:, 3] = {y[0]}")
    chk.equal("delta update == W x_old + W[:, 1] - W[:, 3] == W x_new", y[0], by_hand)
    chk.equal("delta update == dense W x_new", y, numpy_ref.linear_forward(x_new, W, None))

    fractions = [0.01, 0.1, 0.3] if args.fast else [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3]
    w_t = np.ascontiguousarray(w_lin.T)                      # (F_in, F_out), laid out once
    x_before = spikes(rng, (M, F_in), 0.29)                  # the posterior's rate
    y_before = cpu.linear_forward(x_before, w_lin, b_lin)
    print(f"  linear {F_in} -> {F_out}, M = {M} rows, inputs firing at 0.29; y = W x_old + b "
          f"kept from the last run")
    rows, d_ms, u_ms = [], [], []
    for fraction in fractions:
        flips = rng.random(x_before.shape) < fraction
        x_after = np.where(flips, 1 - x_before, x_before).astype(np.float32)
        want = cpu.linear_forward(x_after, w_lin, b_lin)
        got = linear_delta_into(y_before.copy(), x_after, x_before, w_t)
        reference = numpy_ref.linear_delta_into(y_before.copy(), x_after, x_before, w_t)
        equal = bool(np.allclose(got, want, **F32) and np.allclose(reference, want, **F32))
        chk.check(f"delta update at {fraction:g} flipped == dense (float32 tolerance)", equal,
                  f"max abs err {np.abs(got - want).max():.1e}")
        scratch = y_before.copy()

        def delta():
            np.copyto(scratch, y_before)
            linear_delta_into(scratch, x_after, x_before, w_t)
        td, tu = best_times([lambda: cpu.linear_forward(x_after, w_lin, b_lin), delta], repeats)
        d_ms.append(td)
        u_ms.append(tu)
        rows.append([f"{fraction:g}", f"{flips.mean() * M * F_in * F_out / 1e6:,.1f}", f"{td:.2f}",
                     f"{tu:.2f}", f"{td / tu:.2f}x", "yes" if equal else "NO"])
    table(rows, ["flipped", "adds (M)", "dense ms", "delta ms", "speed-up", "equal"])
    print("  (the delta time includes restoring y from its saved copy, which the model does "
          "not need: it updates y in place)")
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    ax.plot(fractions, d_ms, "o-", label="dense W x_new (BLAS)")
    ax.plot(fractions, u_ms, "s-", label="delta: y + W (x_new - x_old)")
    ax.axvspan(0.01, 0.1, color="gray", alpha=0.15, label="FSVAE posterior prefixes")
    ax.set(xscale="log", yscale="log", xlabel="fraction of inputs that changed",
           ylabel="time (ms)", title=f"linear {F_in} -> {F_out}, {M} rows")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    save_figure(fig, args.out, "12_delta_update.png")

    chk.finish()


if __name__ == "__main__":
    main()
