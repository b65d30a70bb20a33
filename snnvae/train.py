"""Training loop with evaluation, pictures, checkpoints and exact resume.

A run lives in one directory:
    config.json          model config and training settings
    checkpoint.npz       the latest checkpoint (every epoch end, every N steps, and on Ctrl-C)
    metrics.csv          one row per epoch: training losses, test losses, firing rates, time
    curves.png           the loss curves so far
    reconstructions.png  test inputs and their reconstructions after the last epoch
    samples.png          images generated from the prior after the last epoch
    (and per-epoch copies of the two grids: reconstructions_epoch003.png, ...)

Models plug in through four methods: ``training_losses(images, rng, epoch, epochs)`` returning a
dict of Tensors with "loss", ``evaluation_losses(images, rng)`` returning floats,
``reconstruct(images, rng)`` and ``sample(n, rng)`` returning image arrays in [-1, 1].
The learning rate of every step comes from ``learning_rate`` (constant or cosine). A model may
also offer ``parameter_groups()``, a list of {"params": [...], "lr_scale": float}: the optimiser
then gets one group each, and a group's learning rate is the step's rate times its lr_scale
(ESVAE trains its prior's sample layer at 10x). lr_scale is saved with the optimiser state.

A resumed run must use the same settings and data as the original (the checkpoint records both);
only the number of epochs and the time budget may change.

Randomness: ``seed`` derives three independent generators: one for the initial weights (made
by the caller), one for training (batch order, latent picks, scheduled sampling) whose state is
checkpointed, and one per evaluation (seeded by epoch) so that evaluating never perturbs training.
A run resumed from any checkpoint therefore continues exactly as the uninterrupted run would.

Memory: ``run`` calls ``snnvae.memory.retain_freed_memory()``, so the process reuses the memory
freed by one step in the next instead of returning it to the system (faster, most of all on
virtual machines; the resident size stays at its peak). ``SNNVAE_RELEASE_MEMORY=1`` opts out.
"""
from __future__ import annotations

import csv
import json
import math
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import viz
from .autograd import no_grad
from .checkpoint import load_checkpoint, save_checkpoint
from .memory import retain_freed_memory
from .nn import monitor_firing_rates
from .optim import AdamW


@dataclass
class TrainSettings:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-3
    seed: int = 0
    checkpoint_every: int = 200      # steps between mid-epoch checkpoints (0: epoch ends only)
    eval_batch_size: int = 250
    eval_images: int | None = None   # evaluate on the first n test images (None: all)
    samples: int = 64                # images generated for samples.png
    max_minutes: float | None = None # stop at the first epoch end after this many minutes of
                                     # training in this session (a resumed run gets a new budget)
    lr_schedule: str = "constant"    # "constant" (the papers) or "cosine" (decay to 0 over the run)

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")


class RunExistsError(RuntimeError):
    pass


def learning_rate(settings: TrainSettings, step: int, steps_per_epoch: int) -> float:
    """The learning rate of a step: constant, or cosine from lr down to 0 over all epochs,
    lr * (1 + cos(pi * step / total_steps)) / 2. A function of the step alone, so a resumed run
    gets the same rates."""
    if settings.lr_schedule == "constant":
        return settings.lr
    total = settings.epochs * steps_per_epoch
    return settings.lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


def optimizer_groups(model, lr):
    """The model's ``parameter_groups()`` (each group's initial lr = lr * lr_scale), or all its
    parameters in one group."""
    if not hasattr(model, "parameter_groups"):
        return model.parameters()
    groups = []
    for group in model.parameter_groups():
        scale = float(group.get("lr_scale", 1.0))
        if not scale > 0:
            raise ValueError(f"{type(model).__name__}.parameter_groups: lr_scale must be "
                             f"positive, got {group.get('lr_scale')}")
        groups.append({**group, "params": list(group["params"]), "lr_scale": scale,
                       "lr": lr * scale})
    return groups


def training_rng(seed):
    return np.random.default_rng([seed, 1])


def evaluation_rng(seed, epoch):
    return np.random.default_rng([seed, 2, epoch])


RUN_OUTPUTS = ("checkpoint.npz", "metrics.csv", "config.json", "curves.png",
               "reconstructions*.png", "samples*.png")
RESUMABLE_CHANGES = ("epochs", "max_minutes")   # settings a resumed run may change


def check_run_dir(run_dir, resume=False, force=False):
    """Refuse to touch an existing run unless told how (--resume or --force). Changes nothing."""
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not (resume or force):
        raise RunExistsError(f"{run_dir} already holds a run. Use --resume to continue it, "
                             f"--force to overwrite it, or --out to choose another directory.")
    if resume and not (run_dir / "checkpoint.npz").exists():
        raise FileNotFoundError(f"--resume: no checkpoint.npz in {run_dir}. Resume needs the same "
                                f"--out (and --preset/--dataset, which choose the default --out) "
                                f"as the run you want to continue.")
    return run_dir


def prepare_run_dir(run_dir, resume=False, force=False):
    """check_run_dir, then (for --force) delete the previous run's outputs and create the folder.
    Call it once everything that can fail before training (data, model) has succeeded."""
    run_dir = check_run_dir(run_dir, resume, force)
    if force and not resume and run_dir.exists():
        for pattern in RUN_OUTPUTS:
            for path in run_dir.glob(pattern):
                path.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


class _StopRequest:
    """First Ctrl-C: finish the current step, checkpoint, stop. Second Ctrl-C: stop at once."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write("\nCtrl-C: finishing this step and writing a checkpoint (press again to abort)")

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)
        return False


class Trainer:
    def __init__(self, model, train_images, test_images, run_dir, settings: TrainSettings,
                 config_dict=None, optimizer=None, progress=True, data_info=None):
        self.model, self.settings = model, settings
        self.train_images, self.test_images = train_images, test_images
        if settings.eval_images is not None:
            self.test_images = test_images[:settings.eval_images]
        self.run_dir = Path(run_dir)
        self.optimizer = optimizer or AdamW(optimizer_groups(model, settings.lr), lr=settings.lr,
                                            weight_decay=settings.weight_decay)
        self.config_dict = json.loads(json.dumps(config_dict or {}))   # as a checkpoint stores it
        self.progress = progress
        self.data_info = {"train_images": len(train_images), "test_images": len(self.test_images),
                          **(data_info or {})}
        self.rng = training_rng(settings.seed)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.order = None
        self.train_seconds = 0.0
        self.history = []
        self.epoch_sums = {}

    # --- checkpoints -------------------------------------------------------------------------
    @property
    def checkpoint_path(self):
        return self.run_dir / "checkpoint.npz"

    def save(self):
        meta = dict(epoch=self.epoch, step_in_epoch=self.step_in_epoch,
                    global_step=self.global_step, train_seconds=self.train_seconds,
                    rng_state=self.rng.bit_generator.state, settings=asdict(self.settings),
                    config=self.config_dict, model=type(self.model).__name__,
                    epoch_sums=self.epoch_sums, data=self.data_info)
        extra = {} if self.order is None else {"order": self.order}
        save_checkpoint(self.checkpoint_path, model=self.model, optimizer=self.optimizer,
                        meta=meta, extra=extra)

    def restore(self):
        model_state, optim_state, meta, extra = load_checkpoint(self.checkpoint_path)
        if meta.get("model") != type(self.model).__name__:
            raise ValueError(f"{self.checkpoint_path} holds a {meta.get('model')}, not a "
                             f"{type(self.model).__name__}")
        if meta.get("config") and self.config_dict and meta["config"] != self.config_dict:
            diff = {k: (meta["config"].get(k), v) for k, v in self.config_dict.items()
                    if meta["config"].get(k) != v}
            raise ValueError(f"the checkpoint was made with another model configuration "
                             f"(checkpoint, now): {diff}")
        saved = {k: v for k, v in meta.get("settings", {}).items() if k not in RESUMABLE_CHANGES}
        now = {k: v for k, v in asdict(self.settings).items() if k not in RESUMABLE_CHANGES}
        changes = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
        changes.update({f"data {k}": (meta.get("data", {}).get(k), v)
                        for k, v in self.data_info.items() if meta.get("data", {}).get(k) != v})
        if changes:
            listing = ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in changes.items())
            raise ValueError(f"cannot resume: the run was made with other settings or data "
                             f"({listing}). Only {' and '.join(RESUMABLE_CHANGES)} may change.")
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(optim_state)
        self.epoch, self.step_in_epoch = meta["epoch"], meta["step_in_epoch"]
        self.global_step, self.train_seconds = meta["global_step"], meta["train_seconds"]
        self.epoch_sums = meta.get("epoch_sums", {})
        self.rng.bit_generator.state = meta["rng_state"]
        self.order = extra.get("order")
        self.history = read_metrics(self.run_dir / "metrics.csv")[:self.epoch]

    # --- the loop ------------------------------------------------------------------------------
    def run(self):
        s = self.settings
        retain_freed_memory()   # reuse freed memory step after step (see snnvae.memory)
        (self.run_dir / "config.json").write_text(json.dumps(
            {"model": self.config_dict, "training": asdict(s)}, indent=2))
        session_start = self.train_seconds
        with _StopRequest() as stop:
            while self.epoch < s.epochs:
                finished = self._train_epoch(stop)
                if not finished:
                    self.save()
                    tqdm.write(f"stopped at epoch {self.epoch + 1}, step {self.step_in_epoch}; "
                               f"checkpoint written to {self.checkpoint_path}; continue with --resume")
                    return self.history
                self._end_epoch()
                if stop.requested:
                    tqdm.write(f"stopped after epoch {self.epoch}; checkpoint written to "
                               f"{self.checkpoint_path}; continue with --resume")
                    return self.history
                if s.max_minutes is not None and self.epoch < s.epochs \
                        and self.train_seconds - session_start > 60 * s.max_minutes:
                    tqdm.write(f"time budget of {s.max_minutes} min reached after epoch {self.epoch}")
                    break
        return self.history

    def _train_epoch(self, stop):
        s = self.settings
        n = len(self.train_images)
        if self.order is None:
            self.order = self.rng.permutation(n)
            self.step_in_epoch = 0
            self.epoch_sums = {}
        batches = [self.order[i:i + s.batch_size] for i in range(0, n, s.batch_size)]
        self.model.train()
        bar = tqdm(total=len(batches), initial=self.step_in_epoch, disable=not self.progress,
                   desc=f"epoch {self.epoch + 1}/{s.epochs}", unit="batch", dynamic_ncols=True)
        with bar:
            for b in range(self.step_in_epoch, len(batches)):
                start = time.perf_counter()
                lr = learning_rate(s, self.global_step, len(batches))
                for group in self.optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)
                losses = self.model.training_losses(self.train_images[batches[b]], self.rng,
                                                    self.epoch, s.epochs)
                self.optimizer.zero_grad()
                losses["loss"].backward()
                self.optimizer.step()
                # read before the clock stops: on a GPU that waits for the step's kernels
                values = {key: float(value.item()) for key, value in losses.items()}
                self.train_seconds += time.perf_counter() - start
                self.step_in_epoch, self.global_step = b + 1, self.global_step + 1
                for key, value in values.items():
                    self.epoch_sums[key] = self.epoch_sums.get(key, 0.0) + value
                self.epoch_sums["_count"] = self.epoch_sums.get("_count", 0) + 1
                count = self.epoch_sums["_count"]
                bar.set_postfix({k: f"{v / count:.4f}" for k, v in self.epoch_sums.items()
                                 if k != "_count"})
                bar.update(1)
                if stop.requested:
                    return False
                if s.checkpoint_every and self.global_step % s.checkpoint_every == 0:
                    self.save()
        return True

    def _end_epoch(self):
        count = self.epoch_sums.get("_count", 1)
        row = {"epoch": self.epoch + 1, "step": self.global_step,
               "train_minutes": round(self.train_seconds / 60, 3)}
        row.update({f"train_{k}": v / count for k, v in self.epoch_sums.items() if k != "_count"})
        row.update(self.evaluate(evaluation_rng(self.settings.seed, self.epoch)))
        self.history.append(row)
        self._write_outputs(row)
        self.epoch += 1
        self.order, self.step_in_epoch, self.epoch_sums = None, 0, {}
        self.save()
        rates = [v for k, v in row.items() if k.startswith("rate/")]
        tqdm.write(f"epoch {row['epoch']}: test reconstruction MSE {row['test_recon']:.4f}"
                   + (f", mean firing rate {np.mean(rates):.3f}" if rates else ""))

    def evaluate(self, rng):
        """Test-split losses (weighted by batch size) and mean firing rate of each spiking block."""
        model, s = self.model, self.settings
        model.eval()
        totals, n = {}, len(self.test_images)
        with no_grad(), monitor_firing_rates(model) as rates:
            for start in range(0, n, s.eval_batch_size):
                batch = self.test_images[start:start + s.eval_batch_size]
                for k, v in model.evaluation_losses(batch, rng).items():
                    totals[k] = totals.get(k, 0.0) + v * len(batch)
        model.train()
        row = {f"test_{k}": v / n for k, v in totals.items()}
        row.update({f"rate/{k}": float(np.mean(v)) for k, v in rates.items() if v})
        return row

    def _write_outputs(self, row):
        write_metrics(self.run_dir / "metrics.csv", self.history)
        keys = [k for k in row if k.startswith(("train_", "test_")) and k != "train_minutes"]
        viz.save_curves(self.history, keys, self.run_dir / "curves.png")
        model, tag = self.model, f"epoch{row['epoch']:03d}"
        model.eval()
        rng = evaluation_rng(self.settings.seed, 10_000 + self.epoch)
        images = self.test_images[:16]
        recon = model.reconstruct(images, rng)
        samples = model.sample(self.settings.samples, rng)
        model.train()
        for name, fn in [("reconstructions", lambda p: viz.save_reconstructions(
                              images, recon, p, title=f"test digits and reconstructions, epoch "
                                                      f"{row['epoch']}")),
                         ("samples", lambda p: viz.save_image_grid(
                              samples, p, title=f"samples from the prior, epoch {row['epoch']}"))]:
            fn(self.run_dir / f"{name}.png")
            fn(self.run_dir / f"{name}_{tag}.png")


def write_metrics(path, history):
    keys = []
    for row in history:
        keys += [k for k in row if k not in keys]
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    tmp.replace(path)


def read_metrics(path):
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) if v not in ("", None) else None for k, v in row.items()}
                for row in csv.DictReader(f)]
