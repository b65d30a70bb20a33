"""Lesson 03: spiking convolutions and transposed convolutions on time-first tensors.

Time-distributed convolution
    A spiking feature map is a 5-D array (T, N, C, H, W): time first. FSVAE applies the SAME
    2-D convolution at every time step. Because the array is contiguous and time first,
    folding (T, N) into one batch axis of T*N images is a free reshape, so a spiking conv is
    one ordinary batched conv:

        y[t, n, o, i, j] = b[o] + sum_{c,p,q} w[o, c, p, q] x[t, n, c, i s - pad + p, j s - pad + q]

    output size  H_out = (H + 2 pad - k) // s + 1.  With k = 3, s = 2, pad = 1 every
    encoder stage halves the image: 32 -> 16 -> 8 -> 4 -> 2.

Transposed convolution (the decoder's upsampling)
    The transposed conv is the adjoint of a conv: each input pixel scatters a k x k copy of
    the kernel, scaled by its value, into the output, s pixels apart:

        y[t, n, o, i s - pad + p, j s - pad + q] += x[t, n, c, i, j] w[c, o, p, q]

    output size  H_out = (H - 1) s - 2 pad + k + output_padding.  With k = 3, s = 2,
    pad = 1 that is 2H - 1 + output_padding. A stride-2 conv maps both 31 and 32 pixels to
    16, so its adjoint is ambiguous; output_padding = 1 picks 32 and doubles exactly:
    2 -> 4 -> 8 -> 16 -> 32. Being the adjoint is a checkable identity:
        <conv(x; w), y> = <x, conv_transpose(y; w)>     for every x, y.

A spiking block = conv -> tdBN -> LIF (lesson 04 explains tdBN). The decoder's last layer has
neither: its currents are integrated by the membrane-output read-out
    out = tanh( sum_t 0.8^(T-1-t) y_t ).

What this lesson checks (exit status 1 if any fails):
  * a 4x4 conv and a 2x2 transposed conv worked out by hand;
  * weights are shared over time: the folded conv equals a loop over t;
  * the adjoint identity, and "stride-1 transposed conv = conv with the flipped kernel";
  * the FSVAE encoder/decoder shape walk and its parameter count (hand formula);
  * gradients of SpikingConv2d and SpikingConvTranspose2d (and their inputs) by central
    differences in smooth mode, and spiking backward == straight-through autograd;
  * that a conv bias followed by tdBN gets (numerically) zero gradient: it is redundant;
  * NumPy reference kernels == Numba kernels (conv, transposed conv, forward and backward,
    and a whole encoder forward pass).

Figures: ``03_feature_maps.png`` (a digit, first-layer currents and spike counts, the shape
walk's spike rates), ``03_transposed_conv.png`` (the hand example).

Run:  python lessons/03_spiking_convolutions.py [--fast] [--out DIR] [--seed S]
"""
from __future__ import annotations

import time

import numpy as np

from _common import Checker, banner, parse_args, plt, save_figure, section, table

from snnvae import F, Tensor, backend, gradcheck, nn, no_grad
from snnvae.data import load_embedded_mnist, to_signed_unit


def fsvae_autoencoder(rng, dtype=np.float32):
    """FSVAE's encoder and decoder for 1 x 32 x 32 images, without the latent sampling."""
    enc = [nn.SpikingConv2d(cin, cout, 3, stride=2, padding=1, rng=rng, dtype=dtype)
           for cin, cout in [(1, 32), (32, 64), (64, 128), (128, 256)]]
    encoder = nn.Sequential(*enc, nn.Reshape(2, (1024,)),
                            nn.SpikingLinear(1024, 128, rng=rng, dtype=dtype))
    dec = [nn.SpikingConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1,
                                     rng=rng, dtype=dtype)
           for cin, cout in [(256, 128), (128, 64), (64, 32), (32, 32)]]
    decoder = nn.Sequential(nn.SpikingLinear(128, 1024, rng=rng, dtype=dtype),
                            nn.Reshape(2, (256, 2, 2)), *dec,
                            nn.ConvTranspose2d(32, 1, 3, stride=1, padding=1, rng=rng, dtype=dtype),
                            nn.MembraneOutput(), nn.Tanh())
    return encoder, decoder


def describe(module):
    """A short description of a layer for the shape table."""
    name = type(module).__name__.replace("ConvTranspose2d", "ConvT2d")
    if isinstance(module, nn.ConvTranspose2d):
        cin, cout, k, _ = module.weight.shape
        op = f" op{module.output_padding}" if module.output_padding else ""
        return f"{name} {cin}->{cout} k{k} s{module.stride} p{module.padding}{op}"
    if isinstance(module, nn.Conv2d):
        cout, cin, k, _ = module.weight.shape
        return f"{name} {cin}->{cout} k{k} s{module.stride} p{module.padding}"
    if isinstance(module, nn.Linear):
        return f"{name} {module.in_features}->{module.out_features}"
    if isinstance(module, nn.Reshape):
        return f"Reshape to {module.shape}"
    return name


def main():
    args = parse_args(__doc__)
    rng = np.random.default_rng(args.seed)
    chk = Checker("lesson 03")
    banner("Lesson 03: spiking convolutions and transposed convolutions")

    # -----------------------------------------------------------------------------------------
    section("1. a convolution by hand: 4x4 input, 3x3 kernel of ones, stride 2, padding 1")
    x = np.arange(16.0).reshape(1, 1, 1, 4, 4)           # (T=1, N=1, C=1, 4, 4)
    w = np.ones((1, 1, 3, 3))
    y = F.conv2d(Tensor(x), Tensor(w), None, stride=2, padding=1).data
    # Output (i, j) sums the input rows 2i-1..2i+1 and columns 2j-1..2j+1 (zeros outside):
    #   (0,0): 0+1+4+5 = 10          (0,1): 1+2+3+5+6+7 = 24
    #   (1,0): 4+5+8+9+12+13 = 51    (1,1): 5+6+7+9+10+11+13+14+15 = 90
    print(f"  input\n{x[0, 0, 0]}\n  output {y.shape}:\n{y[0, 0, 0]}")
    chk.close("conv golden values [[10, 24], [51, 90]]", y[0, 0, 0], [[10, 24], [51, 90]])

    section("2. a transposed convolution by hand: 2x2 input, 3x3 ones, stride 2, padding 1")
    xt = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 1, 2, 2)
    yt0 = F.conv_transpose2d(Tensor(xt), Tensor(w), None, 2, 1, 0).data[0, 0, 0]
    yt1 = F.conv_transpose2d(Tensor(xt), Tensor(w), None, 2, 1, 1).data[0, 0, 0]
    # Pixel (i, j) adds its value to output rows 2i-1..2i+1 and columns 2j-1..2j+1. Rows:
    # row 0 sees i=0, row 1 sees i=0 and i=1, rows 2 and 3 see i=1 (row 3 exists only
    # because output_padding=1 extends the output by one row and column).
    expected = np.array([[1, 3, 2, 2], [4, 10, 6, 6], [3, 7, 4, 4], [3, 7, 4, 4]], float)
    print(f"  output_padding 0 -> {yt0.shape}:\n{yt0}\n  output_padding 1 -> {yt1.shape}:\n{yt1}")
    chk.close("transposed conv golden values (output_padding 1, 4x4)", yt1, expected)
    chk.close("output_padding 0 gives the top-left 3x3 of the same result", yt0, expected[:3, :3])

    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
    for ax, img, title in zip(axes, [xt[0, 0, 0], yt0, yt1],
                              ["input 2x2", "transposed, output_padding 0 (3x3)",
                               "transposed, output_padding 1 (4x4)"]):
        ax.imshow(img, cmap="viridis")
        for (r, c), v in np.ndenumerate(img):
            ax.text(c, r, f"{v:g}", ha="center", va="center", color="w", fontsize=11)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    save_figure(fig, args.out, "03_transposed_conv.png")

    # -----------------------------------------------------------------------------------------
    section("3. time-distributed: one conv, shared by every time step")
    T, N = 3, 2
    xs = rng.normal(size=(T, N, 4, 9, 9))
    ws, bs = rng.normal(size=(5, 4, 3, 3)), rng.normal(size=5)
    folded = F.conv2d(Tensor(xs), Tensor(ws), Tensor(bs), 2, 1).data
    looped = np.stack([F.conv2d(Tensor(xs[t]), Tensor(ws), Tensor(bs), 2, 1).data for t in range(T)])
    print(f"  x {xs.shape} -> y {folded.shape}  ((9 + 2 - 3) // 2 + 1 = 5)")
    chk.close("conv on (T, N, C, H, W) == the same conv applied at each t", folded, looped, atol=1e-12)

    section("4. the transposed conv is the adjoint of the conv")
    xa = rng.normal(size=(2, 3, 4, 32, 32))              # (T, N, C_in, 32, 32)
    wa = rng.normal(size=(6, 4, 3, 3))                   # conv: 4 -> 6 channels
    ya = rng.normal(size=(2, 3, 6, 16, 16))
    lhs = np.sum(F.conv2d(Tensor(xa), Tensor(wa), None, 2, 1).data * ya)
    back = F.conv_transpose2d(Tensor(ya), Tensor(wa), None, 2, 1, 1).data
    rhs = np.sum(xa * back)
    print(f"  <conv(x), y> = {lhs:.10f}\n  <x, convT(y)> = {rhs:.10f}   (convT output {back.shape[-2:]})")
    chk.close("<conv(x; w), y> == <x, conv_transpose(y; w)> (stride 2, output_padding 1)", lhs, rhs,
              rtol=1e-12, atol=1e-9)
    # Stride 1: scattering the kernel == gathering with the kernel flipped in space and its two
    # channel axes swapped. FSVAE's last layer is such a stride-1 transposed conv.
    w1 = rng.normal(size=(4, 2, 3, 3))                   # transposed conv 4 -> 2 channels
    via_t = F.conv_transpose2d(Tensor(xa[:, :, :, :8, :8]), Tensor(w1), None, 1, 1, 0).data
    w_conv = np.ascontiguousarray(w1[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    via_c = F.conv2d(Tensor(xa[:, :, :, :8, :8].copy()), Tensor(w_conv), None, 1, 1).data
    chk.close("stride-1 transposed conv == conv with flipped, channel-swapped kernel", via_t, via_c,
              atol=1e-12)

    # -----------------------------------------------------------------------------------------
    section("5. the FSVAE encoder and decoder, layer by layer")
    T_walk, N_walk = (4, 2) if args.fast else (16, 4)
    images, labels = load_embedded_mnist("test")
    digits = to_signed_unit(images[:N_walk])             # (N, 1, 28, 28) in [-1, 1]
    # The papers resize 28 -> 32 bilinearly; padding with background (-1) is enough here.
    digits = np.pad(digits, ((0, 0), (0, 0), (2, 2), (2, 2)), constant_values=-1.0)
    x_in = np.repeat(digits[None], T_walk, axis=0)       # direct coding: same image every step
    encoder, decoder = fsvae_autoencoder(np.random.default_rng(args.seed))
    rows, rates, h = [], [], Tensor(x_in)
    rows.append(["input", "image repeated T times", str(h.shape), "-", "-"])
    with no_grad():
        for part, seq in (("enc", encoder), ("dec", decoder)):
            for i, layer in enumerate(seq):
                h = layer(h)
                spiking = getattr(layer, "spike", None) is not None
                rate = f"{h.data.mean():.3f}" if spiking else "-"
                if spiking:
                    rates.append((f"{part}{i}", h.data.mean()))
                rows.append([f"{part}.{i}", describe(layer), str(h.shape),
                             layer.num_parameters(), rate])
    table(rows, ["layer", "module", "output shape", "params", "spike rate"])
    out_img = h.data
    expected_shapes = {
        "enc.0": (T_walk, N_walk, 32, 16, 16), "enc.1": (T_walk, N_walk, 64, 8, 8),
        "enc.2": (T_walk, N_walk, 128, 4, 4), "enc.3": (T_walk, N_walk, 256, 2, 2),
        "enc.5": (T_walk, N_walk, 128), "dec.2": (T_walk, N_walk, 128, 4, 4),
        "dec.3": (T_walk, N_walk, 64, 8, 8), "dec.4": (T_walk, N_walk, 32, 16, 16),
        "dec.5": (T_walk, N_walk, 32, 32, 32), "dec.6": (T_walk, N_walk, 1, 32, 32),
        "dec.8": (N_walk, 1, 32, 32)}
    got = {r[0]: r[2] for r in rows}
    chk.check("every stage has the shape of the FSVAE architecture",
              all(got[k] == str(v) for k, v in expected_shapes.items()))
    # Parameters by hand: k*k*C_in*C_out weights + C_out biases, + 2 C_out for tdBN's gamma, beta.
    conv_p = lambda cin, cout, bn=True: 9 * cin * cout + cout + (2 * cout if bn else 0)  # noqa: E731
    lin_p = lambda fin, fout: fin * fout + fout + 2 * fout                        # noqa: E731
    hand_enc = sum(conv_p(a, b) for a, b in [(1, 32), (32, 64), (64, 128), (128, 256)]) + lin_p(1024, 128)
    hand_dec = (lin_p(128, 1024) + sum(conv_p(a, b) for a, b in [(256, 128), (128, 64), (64, 32), (32, 32)])
                + conv_p(32, 1, bn=False))
    # The latent networks (lesson 07): posterior 256-256-512-2560, prior 128-256-512-2560.
    hand_post = lin_p(256, 256) + lin_p(256, 512) + lin_p(512, 2560)
    hand_prior = lin_p(128, 256) + lin_p(256, 512) + lin_p(512, 2560)
    total = hand_enc + hand_dec + hand_post + hand_prior
    print(f"  parameters: encoder {encoder.num_parameters():,}, decoder {decoder.num_parameters():,}; "
          f"with the posterior ({hand_post:,}) and prior ({hand_prior:,}) FSVAE has {total:,}")
    chk.check("encoder/decoder parameter counts match the hand formula",
              encoder.num_parameters() == hand_enc and decoder.num_parameters() == hand_dec,
              f"hand {hand_enc:,} / {hand_dec:,}")
    chk.check("whole FSVAE (MNIST) by the same formula: about 4.05 M parameters",
              abs(total - 4.05e6) < 0.01e6, f"{total / 1e6:.3f} M")
    chk.check("the output image lies in [-1, 1] (tanh; float32 rounds |y| > 9 to 1)",
              np.all(np.abs(out_img) <= 1))
    chk.check("every spiking layer fires, none saturates (0 < rate < 1)",
              all(0.0 < r < 1.0 for _, r in rates))

    # A figure of what the first layer sees and emits.
    with no_grad():
        first = encoder[0]
        current = F.conv2d(Tensor(x_in), first.weight, first.bias, 2, 1)
        spikes = first(Tensor(x_in)).data
    fig = plt.figure(figsize=(13, 6.5))
    grid = fig.add_gridspec(3, 9)
    ax = fig.add_subplot(grid[0:2, 0:2])
    ax.imshow(digits[0, 0], cmap="gray", vmin=-1, vmax=1)
    ax.set_title(f"input (label {labels[0]}), 32x32", fontsize=9)
    ax.axis("off")
    ax = fig.add_subplot(grid[2, 0:2])
    ax.imshow(out_img[0, 0], cmap="gray", vmin=-1, vmax=1)
    ax.set_title("untrained decoder output", fontsize=9)
    ax.axis("off")
    for k in range(7):
        ax = fig.add_subplot(grid[0, 2 + k])
        lim = np.abs(current.data[0, 0, k]).max()
        ax.imshow(current.data[0, 0, k], cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(f"ch {k}: conv current", fontsize=8)
        ax.axis("off")
        ax = fig.add_subplot(grid[1, 2 + k])
        ax.imshow(spikes[:, 0, k].sum(axis=0), cmap="magma", vmin=0, vmax=T_walk)
        ax.set_title(f"ch {k}: spikes / {T_walk} steps", fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(grid[2, 2:])
    ax.bar(range(len(rates)), [r for _, r in rates])
    ax.set_xticks(range(len(rates)), [n for n, _ in rates], fontsize=8)
    ax.set(ylabel="spike rate", title="firing rate of each spiking layer (untrained, tdBN alpha = 1)")
    save_figure(fig, args.out, "03_feature_maps.png")

    # -----------------------------------------------------------------------------------------
    section("6. gradients by central differences (float64, smooth spikes)")
    grng = np.random.default_rng(args.seed + 1)
    samples = 12 if args.fast else 40
    Tg, Ng = (3, 2) if args.fast else (4, 3)
    conv = nn.SpikingConv2d(2, 3, 3, stride=2, padding=1, rng=grng, dtype=np.float64)
    tconv = nn.SpikingConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1, rng=grng,
                                      dtype=np.float64)
    xg = Tensor(grng.normal(size=(Tg, Ng, 2, 6, 6)), requires_grad=True)
    readout = Tensor(grng.normal(size=(Tg, Ng, 2, 6, 6)))

    def loss():  # conv 6x6 -> 3x3, transposed conv back to 6x6, a random read-out
        return (tconv(conv(xg)) * readout).sum()

    names = ["x", "conv.weight", "conv.bias", "conv.bn.weight", "conv.bn.bias",
             "tconv.weight", "tconv.bias", "tconv.bn.weight", "tconv.bn.bias"]
    params = [xg, conv.weight, conv.bias, conv.bn.weight, conv.bn.bias,
              tconv.weight, tconv.bias, tconv.bn.weight, tconv.bn.bias]
    results = gradcheck.grad_check(loss, params, names, samples=samples, rng=grng)
    for r in results:
        print("  " + str(r))
    chk.grad_results("conv -> tdBN -> LIF -> convT -> tdBN -> LIF", results)
    with F.spike_mode("smooth"):
        conv.zero_grad()
        loss().backward()
    print(f"  |d loss / d conv.bias| = {np.abs(conv.bias.grad).max():.1e}: tdBN subtracts the "
          f"channel mean, so a bias before it has no effect")
    chk.check("a bias followed by tdBN (training mode) has zero gradient",
              np.abs(conv.bias.grad).max() < 1e-10)
    results = gradcheck.check_spiking_backward(loss, params, names)
    chk.grad_results("spiking backward == straight-through", results)

    # -----------------------------------------------------------------------------------------
    section("7. NumPy reference kernels vs Numba kernels")
    ref, fast = backend.kernels("numpy"), backend.kernels("cpu")
    B = 16 if args.fast else 64
    xk = rng.normal(size=(B, 8, 16, 16)).astype(np.float32)
    wk = rng.normal(size=(12, 8, 3, 3)).astype(np.float32)
    bk = rng.normal(size=12).astype(np.float32)
    gk = rng.normal(size=(B, 12, 8, 8)).astype(np.float32)
    wt = rng.normal(size=(12, 8, 3, 3)).astype(np.float32)   # transposed: 12 -> 8 channels
    xtk = gk                                                  # (B, 12, 8, 8) -> (B, 8, 16, 16)
    gtk = xk
    timings = []
    for name, fwd, bwd, fargs, bargs in [
            ("conv2d", "conv2d_forward", "conv2d_backward", (xk, wk, bk, 2, 1), (gk, xk, wk, 2, 1, True)),
            ("conv_transpose2d", "conv_transpose2d_forward", "conv_transpose2d_backward",
             (xtk, wt, bk[:8], 2, 1, 1), (gtk, xtk, wt, 2, 1, True))]:
        out = {}
        for label, k in (("numpy", ref), ("numba", fast)):
            getattr(k, fwd)(*fargs)                             # warm-up: Numba compiles (or
            getattr(k, bwd)(*bargs)                             # loads its cache) on first call
            best = np.inf
            for _ in range(3):                                  # best of 3: timings are noisy
                start = time.perf_counter()
                y = getattr(k, fwd)(*fargs)
                grads = getattr(k, bwd)(*bargs)
                best = min(best, time.perf_counter() - start)
            out[label] = (y, grads, best)
        (y_r, g_r, t_r), (y_c, g_c, t_c) = out["numpy"], out["numba"]
        timings.append([name, f"{t_r * 1e3:.1f} ms", f"{t_c * 1e3:.1f} ms"])
        chk.close(f"{name} forward: numpy == numba", y_c, y_r, atol=1e-4, rtol=1e-4)
        for gname, a, b in zip(("input", "weight", "bias"), g_c, g_r):
            chk.close(f"{name} backward d/d{gname}: numpy == numba", a, b, atol=1e-3, rtol=1e-4)
    table(timings, ["op (fwd + bwd)", "numpy", "numba"])
    print("  (timings only inform; on a busy machine Numba's threads may lose their advantage)")
    with no_grad():
        enc64 = fsvae_autoencoder(np.random.default_rng(args.seed), np.float64)[0]
        x64 = x_in.astype(np.float64)
        with backend.use("numpy"):
            s_ref = enc64(Tensor(x64)).data
        with backend.use("cpu"):
            s_fast = enc64(Tensor(x64)).data
    chk.equal("whole encoder (float64): identical latent spikes on both backends", s_fast, s_ref)

    chk.finish()


if __name__ == "__main__":
    main()
