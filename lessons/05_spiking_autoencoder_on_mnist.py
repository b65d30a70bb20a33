"""Lesson 05: a small spiking convolutional autoencoder, trained on real MNIST digits.

Everything from lessons 01-04 in one network, trained end to end through spikes:

    image x (N, 1, 28, 28) in [-1, 1]
      -> direct coding: the same image at each of T steps          (T, N, 1, 28, 28)
      -> SpikingConv2d 1 -> 16, 3x3, stride 2 (conv, tdBN, LIF)     (T, N, 16, 14, 14)  spikes
      -> SpikingConv2d 16 -> 32, 3x3, stride 2                      (T, N, 32, 7, 7)    spikes
      -> SpikingConvTranspose2d 32 -> 16, stride 2, output_padding 1 (T, N, 16, 14, 14) spikes
      -> ConvTranspose2d 16 -> 1, stride 2, output_padding 1         (T, N, 1, 28, 28)   currents
      -> membrane output  y = sum_t 0.8^(T-1-t) current_t            (N, 1, 28, 28)
      -> tanh                                                        reconstruction in (-1, 1)

    loss = mean over pixels of (tanh(y) - x)^2

Between the input and the last layer every signal is a binary spike train; the only
real-valued read-out is the membrane potential of a neuron that never fires. Gradients reach
the first layer through two LIF layers by BPTT with the surrogate window (lesson 02), and tdBN
(lesson 04) keeps every layer firing from the first step on. This is the skeleton of FSVAE's
encoder and decoder, minus the spiking latent space that lessons 06-09 add in between.

Training uses AdamW (decoupled weight decay 1e-3, as FSVAE) with a learning rate of 3e-3,
three times FSVAE's 1e-3 so that a short run on two CPU cores shows clear progress. The run
is bounded by a number of steps and a time budget (fast mode: at most ~10 s, full mode: about
a minute); ``--steps N`` fixes the number of steps exactly (reproducible for a seed).

Evaluation runs in eval mode, tdBN then uses its running statistics. Before training those
statistics are calibrated by one forward pass on 256 training digits (momentum set to 1 for
that pass), so that the "untrained" reference is a random network with sensible
normalisation, not one that normalises with the initial statistics (mean 0, variance 1).

What this lesson checks (exit status 1 if any fails):
  * every parameter of the same architecture (float64, smooth spikes) by central differences;
  * the training loss is finite at every step;
  * the held-out test MSE drops at least 30 % below the untrained network's (typically by
    more than 80 %), and below the MSE of always predicting the mean training image;
  * every spiking layer fires on test digits, but none fires always (0.01 < rate < 0.99).

Figures: ``05_reconstructions.png`` (test digits, untrained and trained reconstructions,
bottleneck spike counts) and ``05_training.png`` (loss curve, firing rates per layer).

Run:  python lessons/05_spiking_autoencoder_on_mnist.py [--fast] [--out DIR] [--seed S]
          [--steps N] [--T T] [--backend numpy|cpu|cuda]
"""
from __future__ import annotations

import sys
import time

import numpy as np

from _common import Checker, banner, parse_args, plt, save_figure, section, table

from snnvae import F, Tensor, backend, gradcheck, nn, no_grad, optim
from snnvae.data import load_embedded_mnist, minibatches, to_signed_unit


def build_autoencoder(rng, dtype=np.float32):
    encoder = nn.Sequential(
        nn.SpikingConv2d(1, 16, 3, stride=2, padding=1, rng=rng, dtype=dtype),
        nn.SpikingConv2d(16, 32, 3, stride=2, padding=1, rng=rng, dtype=dtype))
    decoder = nn.Sequential(
        nn.SpikingConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1, rng=rng,
                                  dtype=dtype),
        nn.ConvTranspose2d(16, 1, 3, stride=2, padding=1, output_padding=1, rng=rng, dtype=dtype),
        nn.MembraneOutput(), nn.Tanh())
    return nn.Sequential(encoder, decoder)


SPIKING = ("enc conv 1->16", "enc conv 16->32", "dec convT 32->16")


def run(model, images, T, record=False):
    """Forward pass of (N, 1, 28, 28) images; optionally return each spiking layer's output."""
    h = Tensor(np.repeat(images[None], T, axis=0))      # direct coding, (T, N, 1, 28, 28)
    spikes = []
    for layer in (*model[0], *model[1]):
        h = layer(h)
        if getattr(layer, "spike", None) is not None:
            spikes.append(h.data)
    return (h, spikes) if record else h


def evaluate(model, images, T, batch=250):
    """Test MSE (eval mode, running statistics) and each spiking layer's firing rate."""
    model.eval()
    se, rates = 0.0, np.zeros(len(SPIKING))
    with no_grad():
        for start in range(0, len(images), batch):
            x = images[start:start + batch]
            y, spikes = run(model, x, T, record=True)
            se += float(np.sum((y.data - x) ** 2))
            rates += np.array([s.mean() for s in spikes]) * len(x)
    model.train()
    return se / images.size, rates / len(images)


def main():
    def extra(parser):
        parser.add_argument("--steps", type=int, default=None,
                            help="train exactly this many steps (default: a time budget)")
        parser.add_argument("--T", type=int, default=None,
                            help="time steps (default: 4 with --fast, 6 otherwise)")
        parser.add_argument("--backend", choices=backend.BACKENDS, default="cpu",
                            help="kernels: 'cpu' (Numba, default), 'numpy' (the reference) or "
                                 "'cuda' (numba.cuda; needs a GPU)")

    args = parse_args(__doc__, extra=extra)
    try:
        backend.set_backend(args.backend)
    except RuntimeError as err:      # CudaUnavailableError: says what to do
        sys.exit(f"error: {err}")
    rng = np.random.default_rng(args.seed)
    chk = Checker("lesson 05")
    banner("Lesson 05: a spiking convolutional autoencoder on MNIST")
    if args.fast:
        T, batch, n_test, budget, min_steps, max_steps, every = 4, 16, 300, 6.0, 40, 150, 10
    else:
        T, batch, n_test, budget, min_steps, max_steps, every = 6, 32, 2000, 60.0, 100, 3000, 20
    if args.T is not None:
        T = args.T
    if args.steps is not None:
        min_steps = max_steps = args.steps
        budget = np.inf

    # -----------------------------------------------------------------------------------------
    section("1. data: the real MNIST subset shipped with snnvae")
    train_u8, _ = load_embedded_mnist("train")
    test_u8, test_labels = load_embedded_mnist("test")
    x_train = to_signed_unit(train_u8)                  # (8000, 1, 28, 28) float32 in [-1, 1]
    x_test = to_signed_unit(test_u8[:n_test])
    mean_image_mse = float(np.mean((x_test - x_train.mean(axis=0)) ** 2))
    print(f"  train {x_train.shape}, held-out test {x_test.shape}, pixel range "
          f"[{x_train.min():g}, {x_train.max():g}]")
    print(f"  baseline: always predicting the mean training image gives test MSE {mean_image_mse:.4f}")

    # -----------------------------------------------------------------------------------------
    section("2. the model, and its gradients checked by central differences")
    model = build_autoencoder(np.random.default_rng(args.seed))
    for name, p in model.named_parameters():
        print(f"  {name:22s} {str(p.shape):16s}")
    print(f"  {model.num_parameters():,} parameters, T = {T} time steps, kernels: {backend.current()}")
    check_model = build_autoencoder(np.random.default_rng(args.seed), dtype=np.float64)
    x_small = x_train[:2].astype(np.float64)
    named = list(check_model.named_parameters())
    results = gradcheck.grad_check(
        lambda: F.mse_loss(run(check_model, x_small, 2), Tensor(x_small)),
        [p for _, p in named], [n for n, _ in named], samples=3, rng=np.random.default_rng(1))
    chk.check(f"all {len(results)} parameter tensors agree with central differences "
              f"(3 entries each, smooth mode)", all(r.passed for r in results),
              f"worst rel err {max(r.max_rel_error for r in results):.1e}")
    for r in results:
        if not r.passed:
            print("    " + str(r))

    # -----------------------------------------------------------------------------------------
    section("3. the untrained network")
    # Calibrate tdBN's running statistics: with momentum 1 a single training-mode pass simply
    # stores this batch's statistics (the running variance as its unbiased estimate).
    norms = [m for _, m in model.named_modules() if isinstance(m, nn.TdBatchNorm)]
    for m in norms:
        m.momentum = 1.0
    with no_grad():
        run(model, x_train[rng.choice(len(x_train), 256, replace=False)], T)
    for m in norms:
        m.momentum = 0.1
    mse_before, rates_before = evaluate(model, x_test, T)
    show = x_test[:8]
    model.eval()
    with no_grad():
        recon_before = run(model, show, T).data
    model.train()
    print(f"  test MSE {mse_before:.4f}; firing rates " +
          ", ".join(f"{n}: {r:.3f}" for n, r in zip(SPIKING, rates_before)))

    # -----------------------------------------------------------------------------------------
    section("4. training: AdamW, MSE, mini-batches of real digits")
    opt = optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-3)
    budget_txt = "" if np.isinf(budget) else f", time budget {budget:g} s"
    print(f"  batch {batch}, at least {min_steps} and at most {max_steps} steps{budget_txt}")
    losses, step, start = [], 0, time.perf_counter()
    finite = True
    while step < max_steps:
        for idx in minibatches(len(x_train), batch, rng):
            x = x_train[idx]
            loss = F.mse_loss(run(model, x, T), Tensor(x))
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            losses.append(loss.item())
            finite &= bool(np.isfinite(losses[-1]))
            elapsed = time.perf_counter() - start
            if step % every == 0 or step == 1:
                print(f"  step {step:4d}  train loss {losses[-1]:.4f}  ({elapsed:5.1f} s)", flush=True)
            if step >= max_steps or (step >= min_steps and elapsed > budget):
                break
        if step >= max_steps or (step >= min_steps and time.perf_counter() - start > budget):
            break
    train_time = time.perf_counter() - start
    print(f"  trained {step} steps ({step * batch / len(x_train):.2f} epochs) in {train_time:.1f} s")
    chk.check("the training loss stayed finite", finite)

    # -----------------------------------------------------------------------------------------
    section("5. after training")
    mse_after, rates_after = evaluate(model, x_test, T)
    model.eval()
    with no_grad():
        recon_after, spikes_after = run(model, show, T, record=True)
    model.train()
    drop = 1 - mse_after / mse_before
    table([["test MSE", f"{mse_before:.4f}", f"{mse_after:.4f}"]] +
          [[f"rate {n}", f"{a:.3f}", f"{b:.3f}"] for n, a, b in zip(SPIKING, rates_before, rates_after)],
          ["", "untrained", "trained"])
    chk.check("held-out test MSE at least 30% below the untrained network's",
              mse_after <= 0.7 * mse_before, f"{mse_before:.4f} -> {mse_after:.4f}, -{drop:.0%}")
    chk.check("held-out test MSE below the mean-image baseline", mse_after < mean_image_mse,
              f"{mse_after:.4f} < {mean_image_mse:.4f}")
    chk.check("every spiking layer fires but is not saturated (0.01 < rate < 0.99)",
              np.all((rates_after > 0.01) & (rates_after < 0.99)), f"{np.round(rates_after, 3)}")

    # -----------------------------------------------------------------------------------------
    fig, axes = plt.subplots(4, 8, figsize=(12, 6.6))
    bottleneck = spikes_after[1].sum(axis=0)            # (8, 32, 7, 7) spike counts over T
    for j in range(8):
        for i, (img, title) in enumerate([(show[j, 0], f"digit {test_labels[j]}"),
                                          (recon_before[j, 0], "untrained"),
                                          (recon_after.data[j, 0], "trained")]):
            axes[i, j].imshow(img, cmap="gray", vmin=-1, vmax=1)
            axes[i, j].set_title(title, fontsize=8)
        axes[3, j].imshow(bottleneck[j].reshape(4, 8, 7, 7).transpose(0, 2, 1, 3).reshape(28, 56),
                          cmap="magma", vmin=0, vmax=T)
        axes[3, j].set_title(f"32x7x7 spikes /{T}", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"test digits, reconstructions before/after {step} steps, and bottleneck spike counts")
    save_figure(fig, args.out, "05_reconstructions.png")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    ax1.semilogy(np.arange(1, len(losses) + 1), losses, lw=1, label="train loss (batch)")
    ax1.axhline(mse_before, color="C3", ls="--", lw=1, label=f"test MSE untrained {mse_before:.3f}")
    ax1.axhline(mse_after, color="C2", ls="--", lw=1, label=f"test MSE trained {mse_after:.3f}")
    ax1.axhline(mean_image_mse, color="gray", ls=":", lw=1, label=f"mean-image baseline {mean_image_mse:.3f}")
    ax1.set(xlabel="step", ylabel="MSE", title=f"training (T = {T}, batch {batch}, AdamW 3e-3)")
    ax1.legend(fontsize=8)
    pos = np.arange(len(SPIKING))
    ax2.bar(pos - 0.2, rates_before, 0.4, label="untrained")
    ax2.bar(pos + 0.2, rates_after, 0.4, label="trained")
    ax2.set_xticks(pos, SPIKING)
    ax2.set(ylabel="firing rate (test digits)", title="spikes per neuron per step")
    ax2.legend(fontsize=8)
    save_figure(fig, args.out, "05_training.png")

    chk.finish()


if __name__ == "__main__":
    main()
