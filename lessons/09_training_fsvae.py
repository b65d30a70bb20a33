"""Lesson 09: training a whole FSVAE on real MNIST digits.

Everything from lessons 01-08 in one model (``snnvae.models.FSVAE``), trained end to end:

    image (N, 1, S, S) in [-1, 1], the same at each of T steps          (T, N, 1, S, S)
      -> spiking conv encoder, stride 2 per stage (lessons 03, 04)       (T, N, C_last, 2, 2)
      -> flatten, spiking linear to the latent width                    x (T, N, C)
      -> posterior q(z_t | x_<=t, z_<t), one-of-k pick (lessons 06, 07) q_z (T, N, C, k), z
      -> prior p(z_t | z_<t) on (0, z_0, .., z_{T-2}) (lessons 07, 08)  p_z (T, N, C, k)
      -> spiking transposed-conv decoder, membrane read-out, tanh       (N, 1, S, S)

    loss = MSE(reconstruction, image) + D_psp(q_z, p_z)                  (lesson 08)

with AdamW (lr 3e-3, weight decay 1e-3) on mini-batches of 32 and the scheduled-sampling
probability 0.1 + 0.2 * epoch / epochs. Gradients reach every layer: the decoder and the
encoder through the picked posterior spikes (lesson 06), the prior through D_psp alone.

The two runs
    full (default): a small FSVAE at the papers' 32 x 32 size: encoder channels 16, 32, 64,
        128, latent C = 32 with k = 10, T = 6: 0.34 M parameters, against the paper's 4.05 M
        at C = 128, k = 20, T = 16. Three epochs of the 8000 training digits (750 steps),
        about 3.5 minutes on two busy CPU cores, reproducible for a seed. The samples are
        recognisable digits by then, if blurry.
    --fast: a toy at 16 x 16 (channels 8, 16, C = 16, k = 5, T = 4) on 1024 digits, at most
        4 epochs and about ten seconds: the network learns the dark background and a blob
        where the digit is, not yet the digit itself.
    ``--minutes M`` stops either run at the first epoch end after M minutes of training.

``snnvae.train.Trainer`` runs the loop: it shuffles, steps the optimiser, evaluates on test
digits at each epoch end (eval mode, running tdBN statistics, firing rates of every spiking
block through ``snnvae.nn.monitor_firing_rates``) and writes ``metrics.csv``, ``curves.png``,
``reconstructions.png``, ``samples.png`` and a checkpoint into its run directory
(``<out>/09_fsvae_run``, overwritten by each run of the lesson).

What to expect of the numbers
    The untrained test MSE is large (about 1.8): the untrained output is bright where the
    digits are mostly background (-1). Most of the first drop is learning that background, so
    the fairer bar is the MSE of always predicting the mean training image; the full run gets
    well below it, the fast one not yet. The distance D_psp does not simply fall: untrained,
    posterior and prior both fire at the rate tdBN sets, so they start close; training makes
    the posterior say something about the image, and the prior has to follow.

The untrained reference
    Before training, one training-mode pass at momentum 1 stores the running statistics of
    256 training digits (as in lesson 05). Without it the eval-mode network normalises with
    mean 0 and variance 1 and is nearly silent (lesson 07), which would make a misleading
    baseline. Evaluation uses fresh one-of-k picks, so an eval reconstruction is itself a
    sample (the posterior is random in eval mode too, as in the official code).

BLAS threads
    Like lesson 07, the lesson asks OpenBLAS for one thread unless you set
    ``OPENBLAS_NUM_THREADS`` yourself. The products here are small; on a busy two-core machine a
    two-thread BLAS waited for its second thread at every product and a training step of the
    full configuration took 2.4 s instead of 0.3 s (0.4 s instead of 0.03 s in --fast).

What this lesson checks (exit status 1 if any fails):
  * the training losses (total, reconstruction, distance) stay finite;
  * the test reconstruction MSE falls at least 50 % below the untrained network's (about 90 %
    in practice), and in the full run also below the mean-image baseline;
  * every spiking block, latent networks included, fires on test digits but not always:
    0 < rate < 1 in eval mode after training;
  * samples from the prior (generated incrementally, lesson 07) have shape (n, 1, S, S), lie in
    [-1, 1], are finite and differ from one another; the Trainer wrote its files.

Figures: ``09_reconstructions.png`` (test digits, untrained and trained reconstructions),
``09_samples.png`` (prior samples before and after training), ``09_training.png`` (losses per
epoch and firing rates per block), and the Trainer's own pictures in ``09_fsvae_run/``.

Run:  python lessons/09_training_fsvae.py [--fast] [--out DIR] [--seed S] [--minutes M]
"""
from __future__ import annotations

import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # before NumPy loads; see the docstring

import numpy as np

from _common import Checker, banner, parse_args, plt, save_figure, section, table

from snnvae import data, nn, viz
from snnvae.models import FSVAE, FSVAEConfig
from snnvae.train import Trainer, TrainSettings, prepare_run_dir

FAST = dict(config=FSVAEConfig(hidden_channels=(8, 16), input_size=16, latent_dim=16, k=5,
                               timesteps=4),
            n_train=1024, n_test=256, epochs=4, minutes=10 / 60, drop=0.50)
FULL = dict(config=FSVAEConfig(hidden_channels=(16, 32, 64, 128), input_size=32, latent_dim=32,
                               k=10, timesteps=6),
            n_train=8000, n_test=1000, epochs=3, minutes=None, drop=0.50)


def calibrate(model, images, rng):
    """One training-mode pass at momentum 1: running statistics := those of these images."""
    nn.calibrate_running_statistics(model, lambda: model(images, rng=rng))


def short(name):
    """'rate/posterior.layers.0' -> 'posterior.0' (for tables and plots)."""
    return name.replace("rate/", "").replace(".layers", "")


def main():
    def extra(parser):
        parser.add_argument("--minutes", type=float, default=None,
                            help="training time budget; stops at the first epoch end after it")

    args = parse_args(__doc__, extra=extra)
    rng = np.random.default_rng(args.seed)
    chk = Checker("lesson 09")
    banner("Lesson 09: training FSVAE on MNIST")
    setup = FAST if args.fast else FULL
    cfg = setup["config"]
    S, T = cfg.input_size, cfg.timesteps
    minutes = setup["minutes"] if args.minutes is None else args.minutes

    # -----------------------------------------------------------------------------------------
    section("1. data and model")
    train_u8, _ = data.load_embedded_mnist("train")
    test_u8, test_labels = data.load_embedded_mnist("test")
    train_idx = rng.permutation(len(train_u8))[:setup["n_train"]]
    x_train = data.prepare_images(train_u8[train_idx], size=S)      # (n, 1, S, S) in [-1, 1]
    x_test = data.prepare_images(test_u8[:setup["n_test"]], size=S)
    mean_image_mse = float(np.mean((x_test - x_train.mean(axis=0)) ** 2))
    model = FSVAE(cfg, rng=np.random.default_rng([args.seed, 0]))
    print(f"  train {x_train.shape}, test {x_test.shape}, range [{x_train.min():g}, "
          f"{x_train.max():g}]; mean-image baseline test MSE {mean_image_mse:.4f}")
    print(f"  FSVAE: channels {cfg.hidden_channels}, latent C = {cfg.latent_dim}, k = {cfg.k}, "
          f"T = {T}, {model.num_parameters():,} parameters "
          f"(posterior {model.posterior.num_parameters():,}, prior {model.prior.num_parameters():,})")
    print(f"  BLAS threads: OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")

    # -----------------------------------------------------------------------------------------
    section("2. the untrained network")
    calibrate(model, x_train[:256], np.random.default_rng([args.seed, 4]))
    run_dir = prepare_run_dir(args.out / "09_fsvae_run", force=True)
    settings = TrainSettings(epochs=setup["epochs"], batch_size=32, lr=3e-3,
                             weight_decay=1e-3, seed=args.seed, checkpoint_every=0,
                             eval_batch_size=250, samples=32, max_minutes=minutes)
    trainer = Trainer(model, x_train, x_test, run_dir, settings, config_dict=cfg.to_dict(),
                      progress=False)
    before = trainer.evaluate(np.random.default_rng([args.seed, 5]))
    show = x_test[:8]
    model.eval()
    recon_before = model.reconstruct(show, np.random.default_rng([args.seed, 6]))
    samples_before = model.sample(16, np.random.default_rng([args.seed, 7]))
    model.train()
    print(f"  test MSE {before['test_recon']:.4f}, distance {before['test_distance']:.5f}; "
          f"mean firing rate {np.mean([v for k, v in before.items() if k.startswith('rate/')]):.3f}")

    # -----------------------------------------------------------------------------------------
    section("3. training with snnvae.train.Trainer")
    steps_per_epoch = -(-len(x_train) // settings.batch_size)
    print(f"  AdamW lr {settings.lr:g}, weight decay {settings.weight_decay:g}, batch "
          f"{settings.batch_size}, {steps_per_epoch} steps per epoch, at most {settings.epochs} "
          f"epochs{'' if minutes is None else f' or {minutes:.2g} min'}; run directory "
          f"{os.path.relpath(run_dir)}", flush=True)
    start = time.perf_counter()
    history = trainer.run()
    wall = time.perf_counter() - start
    last = history[-1]
    print(f"  {trainer.global_step} steps ({len(history)} epochs) in {wall:.1f} s, of which "
          f"{trainer.train_seconds:.1f} s in training steps "
          f"({1e3 * trainer.train_seconds / trainer.global_step:.0f} ms per step)")
    finite = all(np.isfinite(row[key]) for row in history
                 for key in ("train_loss", "train_recon", "train_distance"))
    chk.check("training losses (total, reconstruction, distance) stayed finite", finite)

    # -----------------------------------------------------------------------------------------
    section("4. after training")
    rate_keys = [k for k in last if k.startswith("rate/")]
    rows = [["test reconstruction MSE", f"{before['test_recon']:.4f}", f"{last['test_recon']:.4f}"],
            ["test distance D_psp", f"{before['test_distance']:.5f}", f"{last['test_distance']:.5f}"]]
    rows += [[f"rate {short(k)}", f"{before[k]:.3f}", f"{last[k]:.3f}"] for k in rate_keys]
    table(rows, ["", "untrained", "trained"])
    drop = 1 - last["test_recon"] / before["test_recon"]
    chk.check(f"test reconstruction MSE at least {setup['drop']:.0%} below the untrained network's",
              drop >= setup["drop"], f"{before['test_recon']:.4f} -> {last['test_recon']:.4f}, "
              f"-{drop:.0%}; mean-image baseline {mean_image_mse:.4f}")
    if not args.fast:
        chk.check("full run: test reconstruction MSE below the mean-image baseline",
                  last["test_recon"] < mean_image_mse,
                  f"{last['test_recon']:.4f} < {mean_image_mse:.4f}")
    rates = np.array([last[k] for k in rate_keys])
    chk.check(f"all {len(rates)} spiking blocks fire on test digits, none always (0 < rate < 1)",
              len(rates) > 0 and np.all((rates > 0) & (rates < 1)),
              f"min {rates.min():.3f} ({short(rate_keys[int(np.argmin(rates))])}), "
              f"max {rates.max():.3f} ({short(rate_keys[int(np.argmax(rates))])})")
    expected_blocks = {"encoder.0", "before_latent_layer", "posterior.layers.0", "prior.layers.2",
                       "decoder_input", "final_layer.0"}
    chk.check("the rates cover encoder, latent networks and decoder",
              expected_blocks <= {k[5:] for k in rate_keys}, f"{len(rate_keys)} blocks")

    model.eval()
    recon_after = model.reconstruct(show, np.random.default_rng([args.seed, 6]))
    n_samples = 32
    samples = model.sample(n_samples, np.random.default_rng([args.seed, 8]))
    model.train()
    spread = float(np.mean(np.std(samples, axis=0)))
    distinct = len({s.tobytes() for s in samples})
    print(f"  {n_samples} samples from the prior: shape {samples.shape}, range "
          f"[{samples.min():.3f}, {samples.max():.3f}], {distinct} distinct, mean per-pixel std "
          f"across samples {spread:.3f}")
    chk.check(f"samples have shape ({n_samples}, 1, {S}, {S}), are finite and lie in [-1, 1]",
              samples.shape == (n_samples, 1, S, S) and np.all(np.isfinite(samples))
              and np.all(np.abs(samples) <= 1), f"{samples.shape}")
    chk.check("the samples differ from one another", distinct > n_samples // 2 and spread > 1e-3,
              f"{distinct} distinct, spread {spread:.3f}")
    written = [name for name in ("metrics.csv", "curves.png", "reconstructions.png", "samples.png",
                                 "checkpoint.npz") if (run_dir / name).is_file()]
    chk.check("the Trainer wrote metrics.csv, curves.png, reconstructions.png, samples.png and "
              "checkpoint.npz", len(written) == 5, ", ".join(written))

    # -----------------------------------------------------------------------------------------
    fig, axes = plt.subplots(3, 8, figsize=(12, 5))
    for j in range(8):
        for i, (img, title) in enumerate([(show[j, 0], f"digit {test_labels[j]}"),
                                          (recon_before[j, 0], "untrained"),
                                          (recon_after[j, 0], "trained")]):
            axes[i, j].imshow(img, cmap="gray", vmin=-1, vmax=1)
            axes[i, j].set_title(title, fontsize=8)
            axes[i, j].axis("off")
    fig.suptitle(f"test digits and FSVAE reconstructions ({S}x{S}, T = {T}) before and after "
                 f"{trainer.global_step} steps")
    save_figure(fig, args.out, "09_reconstructions.png")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5),
                                   gridspec_kw=dict(width_ratios=[1, 2]))
    ax1.imshow(viz.image_grid(samples_before, ncol=4), cmap="gray", vmin=0, vmax=1)
    ax1.set_title("prior samples, untrained", fontsize=10)
    ax2.imshow(viz.image_grid(samples, ncol=8), cmap="gray", vmin=0, vmax=1)
    ax2.set_title(f"prior samples after {trainer.global_step} steps (incremental generation)",
                  fontsize=10)
    for ax in (ax1, ax2):
        ax.axis("off")
    save_figure(fig, args.out, "09_samples.png")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    epochs = np.arange(0, len(history) + 1)
    ax1.semilogy(epochs, [before["test_recon"]] + [r["test_recon"] for r in history], "o-",
                 label="test MSE")
    ax1.semilogy(epochs[1:], [r["train_recon"] for r in history], "s--", label="train MSE (epoch mean)")
    ax1.semilogy(epochs, [before["test_distance"]] + [r["test_distance"] for r in history], "o-",
                 label="test D_psp")
    ax1.semilogy(epochs[1:], [r["train_distance"] for r in history], "s--",
                 label="train D_psp (epoch mean)")
    ax1.axhline(mean_image_mse, color="gray", ls=":", lw=1, label="mean-image MSE")
    ax1.set(xlabel="epoch (0: untrained)", ylabel="loss",
            title=f"FSVAE {S}x{S}, T = {T}, batch {settings.batch_size}, AdamW {settings.lr:g}")
    ax1.legend(fontsize=8)
    pos = np.arange(len(rate_keys))
    ax2.bar(pos - 0.2, [before[k] for k in rate_keys], 0.4, label="untrained (calibrated)")
    ax2.bar(pos + 0.2, rates, 0.4, label="trained")
    ax2.set_xticks(pos, [short(k) for k in rate_keys], rotation=60, ha="right", fontsize=7)
    ax2.set(ylabel="firing rate on test digits (eval)", title="spikes per neuron per step")
    ax2.legend(fontsize=8)
    save_figure(fig, args.out, "09_training.png")

    chk.finish()


if __name__ == "__main__":
    main()
