"""Training-step and eval throughput of whole models: FSVAE, ESVAE and the ANN VAE on CPU.

What is measured
----------------
For each model (those of ``snnvae.models.registry.MODELS`` among --models) at the paper
configuration of MNIST (FSVAE: T = 16, latent 128, k 20, channels 32-64-128-256; the others:
their ``mnist`` preset), on real MNIST batches (32 x 32, [-1, 1]):

* **training step** at each --batch-sizes: ``model.training_losses`` + ``zero_grad`` +
  ``backward`` + ``AdamW.step``, exactly what ``snnvae.train.Trainer`` runs per batch (FSVAE at
  epoch 75 of 150: scheduled-sampling probability 0.2, its mean over a paper run). --warmup
  steps first (Numba compiles or loads its cache; their times are kept but not used), then
  --steps timed steps, each on a new batch. Images/s = batch / median step time.
* **eval reconstruction** (``model.reconstruct``) and **prior sampling** (``model.sample``) at
  --eval-batch (64): the running BatchNorm statistics are first set from one training-mode
  batch (as a trained model would have them; the untrained network is silent otherwise), then
  --warmup untimed calls and --eval-repeats timed calls.
* **peak memory**: every configuration (one model, one batch size, one kind) runs in a fresh
  subprocess. After the warm-up its peak resident set size is reset to the current one (write
  5 to /proc/self/clear_refs) and read after the timed calls (VmHWM of /proc/self/status), so
  it is the steady-state peak of training or eval, set-up and compilation excluded (where the
  reset is refused, ``peak_excludes_setup`` is false and the peak is the process's, as
  ru_maxrss). tracemalloc would miss Numba's allocations. ``baseline_rss_mb`` is the resident
  size before the first step (interpreter, libraries, data, model).
* **dense-equivalent arithmetic**: ``snnvae.metrics.operations.count_dense_macs`` counts the
  multiply-accumulates a dense implementation performs in one more call (the training
  forward and its backward, or the eval pass), whatever the firing rates. FLOP/s = 2 x MACs x
  images/s, also given as a fraction of the dense matmul rate below.
* **matmul reference**: a dense float32 n x n matmul (``a @ b``, NumPy's BLAS with its default
  threads, both cores), timed in the parent at the start and at the end of the run; the start
  rate is the reference for every ``fraction_of_matmul``.
* **time shares** (two extra, instrumented calls after the timed ones): time in each kernel of
  the active backend (``conv2d_backward``, ``lif_forward``, ...; the rest is Python, autograd
  bookkeeping, NumPy tensor ops and the optimiser), and, in a second call, time in each
  top-level module's forward (encoder, posterior, ...; backward and the optimiser are the
  rest of the step). Wrapping a module's forward makes the model run the read-out module by
  module, as the operation counts need, so the second call is slower than the timed ones; the
  kernel shares come from a call that runs as timed.
* eval configurations also record the spiking blocks' firing rates and the spike-operation
  counts of ``count_operations`` (per image).

Usage:
    python bench/train_step.py                          # full run: all models, batch 16 64 250
    python bench/train_step.py --models FSVAE --batch-sizes 64 --steps 3
    python bench/train_step.py --tiny --batch-sizes 2 --steps 1 --warmup 1   # smoke test

Writes JSON (--out, default bench/results/train_step.json; an existing file is never
overwritten without --force) and a Markdown summary beside it (same name, .md), also printed.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))                  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).parent))

import snnvae  # noqa: F401  first: its thread settings precede NumPy's BLAS (snnvae/__init__)
import numpy as np  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "train_step.json"
DEFAULT_MODELS = ("FSVAE", "ESVAE", "ANNVAE")
# where each model's paper configuration lives: (module, function, argument)
PAPER_PRESETS = {"FSVAE": ("snnvae.models.config", "preset", "mnist"),
                 "ESVAE": ("snnvae.models.esvae_config", "preset", "mnist"),
                 "ANNVAE": ("snnvae.models.ann_vae", "ann_preset", "mnist")}
# --tiny: the same models, narrowed so that a configuration runs in seconds (for tests)
TINY_CHANGES = dict(hidden_channels=(4, 8, 8, 8), latent_dim=8, k=3, timesteps=2)
EPOCH, EPOCHS = 75, 150          # FSVAE scheduled sampling at p = 0.1 + 0.2 * 75 / 150 = 0.2


# --------------------------------------------------------------------------------------------
# Child side: one configuration, in its own process
# --------------------------------------------------------------------------------------------


def rss_mb(field):
    """VmHWM (peak) or VmRSS (now) of this process in MB, from /proc; ru_maxrss as fallback."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # KB on Linux


def reset_peak():
    """Make VmHWM the current size (Linux: write 5 to /proc/self/clear_refs), so the peak read
    later belongs to the timed calls, not to the set-up (data loading, BN calibration, Numba
    compilation in the warm-up).
    Returns False where that is not possible: the peak is then the whole process's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def model_config(name, tiny):
    from snnvae.models.registry import MODELS
    model_cls, config_cls = MODELS[name]
    if name in PAPER_PRESETS:
        module, fn, arg = PAPER_PRESETS[name]
        config = getattr(importlib.import_module(module), fn)(arg)
    else:
        config = config_cls()
    if tiny:
        fields = config.__dataclass_fields__
        config = config.replace(**{k: v for k, v in TINY_CHANGES.items() if k in fields})
    return model_cls, config


def load_images(split, count, rng, data_dir):
    """``count`` real MNIST images (32 x 32, [-1, 1]) drawn from ``split``; the full data set
    from the search path, else the embedded subset."""
    from snnvae import data
    try:
        images, _ = data.load_split("mnist", split, data_dir)
        source = f"mnist {split} ({len(images)} images, data search path)"
    except data.DataError:
        images, _ = data.load_embedded_mnist(split)
        source = f"embedded MNIST subset {split} ({len(images)} images)"
    index = rng.choice(len(images), size=count, replace=count > len(images))
    return data.prepare_images(images[index]), source


class KernelTimer:
    """Wall time per kernel of the active backend while active (outermost calls only)."""

    def __init__(self, sync=lambda: None):
        from snnvae import backend
        self.module = backend.kernels()
        self.sync = sync            # waits for the GPU, so that a kernel's time is its run
        self.names = [n for n in backend.KERNEL_NAMES if hasattr(self.module, n)]
        self.seconds, self.depth = {}, 0

    def __enter__(self):
        self.saved = {n: getattr(self.module, n) for n in self.names}
        for name, fn in self.saved.items():
            setattr(self.module, name, self._wrap(name, fn))
        return self

    def _wrap(self, name, fn):
        def timed(*args, **kwargs):
            if self.depth:
                return fn(*args, **kwargs)
            self.depth += 1
            self.sync()
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.sync()
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
                self.depth -= 1
        return timed

    def __exit__(self, *exc):
        for name, fn in self.saved.items():
            setattr(self.module, name, fn)


class ModuleTimer:
    """Wall time in each top-level child of a model while active: its forward, and its
    ``sample`` where it has one (FSVAE's prior generates through ``sample``, not forward)."""

    METHODS = ("forward", "sample")

    def __init__(self, model, sync=lambda: None):
        self.children = dict(model._modules)
        self.seconds = {}
        self.sync = sync

    def __enter__(self):
        for name, m in self.children.items():
            for method in self.METHODS:
                if hasattr(m, method):
                    object.__setattr__(m, method, self._wrap(name, getattr(m, method)))
        return self

    def _wrap(self, name, fn):
        def timed(*a, **kw):
            self.sync()
            start = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.sync()
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        return timed

    def __exit__(self, *exc):
        for m in self.children.values():
            for method in self.METHODS:
                m.__dict__.pop(method, None)


def instrumented(call, sync, timer):
    """(timer, seconds) for one call run inside ``timer`` (a KernelTimer or ModuleTimer).
    The two timers get a call each: wrapping the modules' forward makes a model run its
    modules one by one where it would otherwise fuse them (the read-out), so the kernel
    shares come from a call with only the kernels wrapped."""
    with timer:
        sync()
        start = time.perf_counter()
        call()
        sync()
        return timer, time.perf_counter() - start


def shares(seconds, total):
    return {k: v / total for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])}


def calibrate(model, images, rng):
    """Running BatchNorm statistics from one training-mode batch (momentum 1)."""
    from snnvae.nn import calibrate_running_statistics
    calibrate_running_statistics(
        model, lambda: model.training_losses(images, rng, EPOCH, EPOCHS))


def on_device(model, spec):
    """The model moved to the benchmark's device: with --device cuda its parameters and every
    tensor of a step live in GPU memory."""
    if spec.get("device") == "cuda":
        model.to_device("cuda")
    return model


def synchronize(spec):
    """Wait for the GPU's queued kernels before the clock is read (launches are asynchronous)."""
    if spec.get("device") == "cuda":
        from numba import cuda
        cuda.synchronize()


def run_train(spec):
    from snnvae.metrics.operations import count_dense_macs
    from snnvae.optim import AdamW
    rng = np.random.default_rng(spec["seed"])
    model_cls, config = model_config(spec["model"], spec["tiny"])
    model = on_device(model_cls(config, rng=np.random.default_rng(spec["seed"]),
                                dtype=np.float32), spec)
    n, steps, warmup = spec["batch_size"], spec["steps"], spec["warmup"]
    images, source = load_images("train", n * (warmup + steps + 2), rng, spec["data_dir"])
    batches = [images[i * n:(i + 1) * n] for i in range(warmup + steps + 2)]
    optimizer = AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)
    model.train()
    baseline = rss_mb("VmRSS")

    def step(batch):
        losses = model.training_losses(batch, rng, EPOCH, EPOCHS)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()

    times = []
    for i, batch in enumerate(batches[:warmup + steps]):
        if i == warmup:
            peak_reset = reset_peak()
        synchronize(spec)
        start = time.perf_counter()
        step(batch)
        synchronize(spec)
        times.append(time.perf_counter() - start)
    peak = rss_mb("VmHWM")
    device_mb = device_memory_mb(spec)
    timed = times[warmup:]
    median = statistics.median(timed)

    sync = functools.partial(synchronize, spec)
    kt, profiled = instrumented(lambda: step(batches[-2]), sync, KernelTimer(sync))
    mt, profiled_modules = instrumented(lambda: step(batches[-2]), sync, ModuleTimer(model, sync))
    macs = count_dense_macs(
        model, lambda: model.training_losses(batches[-1], rng, EPOCH, EPOCHS), n)
    return dict(kind="train", model=spec["model"], config=config.to_dict(), batch_size=n,
                steps=steps, warmup=warmup, warmup_step_s=times[:warmup], step_s=timed,
                median_step_s=median, mean_step_s=statistics.fmean(timed),
                images_per_s=n / median, dense_macs_per_image=macs,
                gflops=2 * macs["total"] * n / median / 1e9,
                peak_rss_mb=peak, baseline_rss_mb=baseline, peak_excludes_setup=peak_reset,
                device_memory_mb=device_mb, data=source,
                profiled_step_s=profiled, profiled_modules_step_s=profiled_modules,
                module_forward_shares=shares(mt.seconds, profiled_modules),
                kernel_shares=shares(kt.seconds, profiled),
                kernel_share_total=sum(kt.seconds.values()) / profiled)


def device_memory_mb(spec):
    """GPU memory in use after the timed steps (--device cuda on a GPU), else None."""
    if spec.get("device") != "cuda":
        return None
    from snnvae.kernels.cuda.launch import device_memory_used_mb
    return device_memory_used_mb()


def run_eval(spec):
    from snnvae.metrics.operations import count_dense_macs, count_operations
    from snnvae.nn import monitor_firing_rates
    from snnvae.autograd import no_grad
    rng = np.random.default_rng(spec["seed"])
    model_cls, config = model_config(spec["model"], spec["tiny"])
    model = on_device(model_cls(config, rng=np.random.default_rng(spec["seed"]),
                                dtype=np.float32), spec)
    n, repeats, warmup = spec["batch_size"], spec["repeats"], spec["warmup"]
    train_images, _ = load_images("train", n, rng, spec["data_dir"])
    calibrate(model, train_images, rng)
    model.eval()
    images, source = load_images("test", n * (warmup + repeats + 1), rng, spec["data_dir"])
    batches = [images[i * n:(i + 1) * n] for i in range(warmup + repeats + 1)]
    if spec["kind"] == "reconstruct":
        def call(batch):
            return model.reconstruct(batch, rng)
    else:
        def call(batch):
            return model.sample(len(batch), rng)
    baseline = rss_mb("VmRSS")
    times = []
    for i, batch in enumerate(batches[:warmup + repeats]):
        if i == warmup:
            peak_reset = reset_peak()
        synchronize(spec)
        start = time.perf_counter()
        call(batch)
        synchronize(spec)
        times.append(time.perf_counter() - start)
    peak = rss_mb("VmHWM")
    timed = times[warmup:]
    median = statistics.median(timed)

    sync = functools.partial(synchronize, spec)
    kt, profiled = instrumented(lambda: call(batches[-1]), sync, KernelTimer(sync))
    with monitor_firing_rates(model) as rates:
        mt, profiled_modules = instrumented(lambda: call(batches[-1]), sync,
                                            ModuleTimer(model, sync))

    def run():
        with no_grad():
            call(batches[-1])
    macs = count_dense_macs(model, run, n)
    ops = count_operations(model, batches[-1], rng,
                           forward=(lambda m, x, r: m.reconstruct(x, r))
                           if spec["kind"] == "reconstruct"
                           else (lambda m, x, r: m.sample(len(x), r)))
    return dict(kind=spec["kind"], model=spec["model"], config=config.to_dict(), batch_size=n,
                repeats=repeats, warmup=warmup, warmup_call_s=times[:warmup], call_s=timed,
                median_call_s=median, images_per_s=n / median, dense_macs_per_image=macs,
                gflops=2 * macs["total"] * n / median / 1e9,
                peak_rss_mb=peak, baseline_rss_mb=baseline, peak_excludes_setup=peak_reset,
                data=source,
                profiled_call_s=profiled, profiled_modules_call_s=profiled_modules,
                module_forward_shares=shares(mt.seconds, profiled_modules),
                kernel_shares=shares(kt.seconds, profiled),
                kernel_share_total=sum(kt.seconds.values()) / profiled,
                firing_rates={k: float(np.mean(v)) for k, v in rates.items() if v},
                operations_per_image=ops["total"])


def child_main(spec_path, result_path):
    from snnvae.memory import retain_freed_memory
    from snnvae.nn import unfused_blocks
    spec = json.loads(Path(spec_path).read_text())
    if spec.get("device") == "cuda":
        from snnvae import backend
        backend.set_backend("cuda")
    # as snnvae.train does: freed memory stays in the process (see snnvae.memory)
    retained = False if spec.get("release_memory") else retain_freed_memory()
    with unfused_blocks() if spec.get("unfused") else contextlib.nullcontext():
        result = run_train(spec) if spec["kind"] == "train" else run_eval(spec)
    result["memory_retained"] = retained
    Path(result_path).write_text(json.dumps(result))


# --------------------------------------------------------------------------------------------
# Parent side: reference matmul, one subprocess per configuration, JSON and Markdown
# --------------------------------------------------------------------------------------------


def reference_matmul(n, repeats=5):
    """GFLOP/s of a dense float32 n x n matmul (NumPy's BLAS, default threads): the median of
    ``repeats`` timed products after one untimed."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return dict(n=n, times_s=times, median_s=median, gflops=2.0 * n ** 3 / median / 1e9)


def child_environment(spec):
    """The child's environment: OpenBLAS reads its thread timeout when NumPy loads it, so the
    --blas-spin setting has to be in place before the child starts."""
    env = dict(os.environ)
    if spec.get("blas_spin"):
        env["OPENBLAS_THREAD_TIMEOUT"] = OPENBLAS_DEFAULT_TIMEOUT
    return env


def run_child(spec, timeout):
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path),
               str(result_path)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  env=child_environment(spec))
        except subprocess.TimeoutExpired:
            return dict(error=f"timed out after {timeout} s")
        if proc.returncode != 0 or not result_path.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
            return dict(error=f"exit code {proc.returncode}", log="\n".join(tail))
        return json.loads(result_path.read_text())


def pct(x):
    return f"{100 * x:.1f}"


def load(values):
    return " / ".join(f"{v:.2f}" for v in values)


RELEASED = ", glibc defaults for freed memory (--release-memory)"
OPENBLAS_DEFAULT_TIMEOUT = "28"    # OpenBLAS's own default: idle threads spin 2^28 cycles
SPINNING = ", OpenBLAS threads spinning after each product (--blas-spin)"


def markdown(result):
    meta, ref = result["meta"], result["meta"]["reference_matmul"]
    m = meta["machine"]
    lines = [f"# Training-step benchmark ({meta['date']})", "",
             f"CPU: {m['cpu_model']}, {m['usable_cores']} usable cores, numba threads "
             f"{m['numba_threads']}, NumPy {m['numpy']} ({m['blas']}), Numba {m['numba']}; "
             f"load average {load(m['loadavg_start'])} at the start, {load(meta['loadavg_end'])} "
             f"at the end; "
             f"commit {m['git_commit'][:10]}{' (modified)' if m['git_dirty'] else ''}.",
             f"Reference: {ref['n']}x{ref['n']} float32 matmul {ref['median_s'] * 1e3:.1f} ms = "
             f"{ref['gflops']:.1f} GFLOP/s (at the end: "
             f"{meta['reference_matmul_end']['gflops']:.1f}). Backend {meta['backend']}"
             f"{', TINY models (not the paper configuration)' if meta['tiny'] else ''}"
             f"{', UNFUSED tdBN and LIF (--unfused)' if meta.get('unfused') else ''}"
             f"{RELEASED if meta.get('release_memory') else ''}"
             f"{SPINNING if meta.get('blas_spin') else ''}; data: "
             f"{meta.get('data', '?')}.", "",
             *([f"**Warning: {meta['warning']}.**", ""] if meta.get("warning") else []),
             "## Training step", "",
             "| model | batch | step ms (median) | images/s | GMAC/image (dense) | GFLOP/s | "
             "% of matmul | peak RSS MB |", "|---|---|---|---|---|---|---|---|"]
    for r in result["train"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['batch_size']} | error: {r['error']} | | | | | |")
            continue
        lines.append(f"| {r['model']} | {r['batch_size']} | {r['median_step_s'] * 1e3:.1f} | "
                     f"{r['images_per_s']:.2f} | {r['dense_macs_per_image']['total'] / 1e9:.4f} | "
                     f"{r['gflops']:.2f} | {pct(r['fraction_of_matmul'])} | "
                     f"{r['peak_rss_mb']:.0f} |")
    lines += ["", "## Eval", "", "| model | kind | batch | call ms (median) | images/s | "
              "GMAC/image (dense) | GFLOP/s | % of matmul | peak RSS MB |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in result["eval"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['kind']} | {r['batch_size']} | error: "
                         f"{r['error']} | | | | | |")
            continue
        lines.append(f"| {r['model']} | {r['kind']} | {r['batch_size']} | "
                     f"{r['median_call_s'] * 1e3:.1f} | {r['images_per_s']:.2f} | "
                     f"{r['dense_macs_per_image']['total'] / 1e9:.4f} | {r['gflops']:.2f} | "
                     f"{pct(r['fraction_of_matmul'])} | {r['peak_rss_mb']:.0f} |")
    lines += ["", "## Time shares of one instrumented call (%)", ""]
    for r in result["train"] + result["eval"]:
        if "error" in r:
            continue
        what = f"{r['model']} {r['kind']}, batch {r['batch_size']}"
        mods = ", ".join(f"{k} {pct(v)}" for k, v in r["module_forward_shares"].items())
        kern = ", ".join(f"{k} {pct(v)}" for k, v in list(r["kernel_shares"].items())[:8])
        lines.append(f"* {what}: forward of {mods}; kernels {pct(r['kernel_share_total'])} in "
                     f"all: {kern}")
    for name, error in result["errors"]:
        lines.append(f"\nerror in {name}: {error}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                    help="model class names (those not in snnvae.models.registry.MODELS are "
                         "skipped with a note)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 250])
    ap.add_argument("--steps", type=int, default=5, help="timed training steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps / calls first")
    ap.add_argument("--eval-batch", type=int, default=64)
    ap.add_argument("--eval-repeats", type=int, default=5)
    ap.add_argument("--no-eval", action="store_true", help="training steps only")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cuda: the numba.cuda kernels on the GPU (fails at once without one)")
    ap.add_argument("--tiny", action="store_true",
                    help=f"narrow models {TINY_CHANGES} for smoke tests (not the paper config)")
    ap.add_argument("--unfused", action="store_true",
                    help="run tdBN and LIF as two operations instead of the fused one (the "
                         "state before that lever, for before/after comparisons)")
    ap.add_argument("--release-memory", action="store_true",
                    help="keep the C library's defaults for freed memory instead of "
                         "snnvae.memory.retain_freed_memory() (the state before that lever)")
    ap.add_argument("--blas-spin", action="store_true",
                    help="keep OpenBLAS's default wait (threads spin 2^28 cycles after a product) "
                         "instead of snnvae's OPENBLAS_THREAD_TIMEOUT=4 (the state before that "
                         "lever)")
    ap.add_argument("--data-dir", help="directory with the MNIST IDX files (default: the search "
                                       "path of snnvae.data, else the embedded subset)")
    ap.add_argument("--ref-size", type=int, default=2048, help="size of the reference matmul")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per configuration")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child_main(*args.child)
        return 0
    if args.device == "cuda":
        from snnvae.kernels.cuda.launch import CudaUnavailableError, require_gpu
        try:
            require_gpu()
        except CudaUnavailableError as err:
            print(f"train_step: --device cuda: {err}", file=sys.stderr)
            return 2
    for name in ("steps", "eval_batch", "eval_repeats"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or min(args.batch_sizes) < 1:
        ap.error("--warmup must be >= 0 and every batch size >= 1")

    from kernels import choose_out, machine   # bench/kernels.py: machine description, out name
    from snnvae import backend
    from snnvae.models.registry import MODELS
    models = [m for m in args.models if m in MODELS]
    skipped = [m for m in args.models if m not in MODELS]
    if skipped:
        print(f"note: not in snnvae.models.registry.MODELS yet, skipped: {skipped}")
    if not models:
        print(f"train_step: none of {args.models} is a known model; known: {sorted(MODELS)}",
              file=sys.stderr)
        return 2
    out = choose_out(args.out, args.force)
    out.parent.mkdir(parents=True, exist_ok=True)

    meta = dict(date=datetime.datetime.now().isoformat(timespec="seconds"), argv=sys.argv[1:],
                device=args.device,
                backend="cuda" if args.device == "cuda" else backend.current(), tiny=args.tiny,
                unfused=args.unfused, release_memory=args.release_memory,
                blas_spin=args.blas_spin,
                openblas_thread_timeout=(OPENBLAS_DEFAULT_TIMEOUT if args.blas_spin else
                                         os.environ.get("OPENBLAS_THREAD_TIMEOUT")),
                tiny_changes=TINY_CHANGES if args.tiny else None, models=models,
                skipped_models=skipped, machine=machine(),
                reference_matmul=reference_matmul(args.ref_size))
    print(f"reference matmul: {meta['reference_matmul']['gflops']:.1f} GFLOP/s")
    cores = meta["machine"]["usable_cores"] or os.cpu_count() or 1
    if meta["machine"]["loadavg_start"][0] > 0.5 * cores:
        meta["warning"] = (f"load average {meta['machine']['loadavg_start'][0]:.2f} on {cores} "
                           f"cores at the start: other processes are running, times and rates "
                           f"are not representative of an idle machine")
        print("warning: " + meta["warning"])
    ref = meta["reference_matmul"]["gflops"]
    common = dict(seed=args.seed, tiny=args.tiny, warmup=args.warmup, unfused=args.unfused,
                  device=args.device,
                  release_memory=args.release_memory, blas_spin=args.blas_spin,
                  data_dir=None if args.data_dir is None else str(args.data_dir))
    specs = [dict(common, kind="train", model=m, batch_size=b, steps=args.steps)
             for m in models for b in args.batch_sizes]
    if not args.no_eval:
        specs += [dict(common, kind=kind, model=m, batch_size=args.eval_batch,
                       repeats=args.eval_repeats)
                  for m in models for kind in ("reconstruct", "sample")]
    result = dict(meta=meta, train=[], eval=[], errors=[])
    sources = set()
    for spec in specs:
        label = f"{spec['model']} {spec['kind']} batch {spec['batch_size']}"
        print(f"running {label} ...", flush=True)
        r = run_child(spec, args.timeout)
        if "error" in r:
            print(f"  failed: {r['error']}\n{r.get('log', '')}")
            result["errors"].append((label, r["error"] + "\n" + r.get("log", "")))
            r = dict(r, model=spec["model"], kind=spec["kind"], batch_size=spec["batch_size"])
        else:
            r["fraction_of_matmul"] = r["gflops"] / ref
            sources.add(r["data"])
            meta["data"] = "; ".join(sorted(sources))
            print(f"  {r['images_per_s']:.2f} images/s, {pct(r['fraction_of_matmul'])} % of "
                  f"the matmul rate, peak {r['peak_rss_mb']:.0f} MB")
        result["train" if spec["kind"] == "train" else "eval"].append(r)
    meta["reference_matmul_end"] = reference_matmul(args.ref_size)
    meta["loadavg_end"] = os.getloadavg()

    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out)
    text = markdown(result)
    out.with_suffix(".md").write_text(text)
    print("\n" + text)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
