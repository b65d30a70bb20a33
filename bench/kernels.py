"""Kernel benchmark: time and GFLOP/s of every FSVAE-MNIST layer kernel, both backends.

What is measured
----------------
For each layer of the FSVAE MNIST model (T = 16 time steps, batch N, float32) this script calls
the raw kernels of ``snnvae.kernels.numpy_ref`` ("numpy") and ``snnvae.kernels.cpu`` ("cpu",
Numba) directly, without Tensors or autograd:

* the layer's weight op, with T folded into the batch (B = T*N rows or images):
  ``conv2d_*``, ``conv_transpose2d_*`` or ``linear_*``, forward and backward;
* ``tdbn_*_train`` on the output of every conv / transposed conv, viewed as (T*N, C, H*W);
* ``lif_*`` on the output of every layer that has a neuron, viewed as (T, M), M = N*C*H*W.

Each kernel is called once to warm up (Numba compiles or loads its cache here; the time of that
first call is kept in the JSON), then timed with ``time.perf_counter`` over ``--repeats``
repeats; the table shows the median. A repeat calls the kernel ``number`` times in a row, with
``number`` chosen so that a repeat lasts about ``--min-time`` seconds (like ``timeit``), so
that sub-millisecond kernels are not lost in timer noise. Times include allocating the outputs,
as they do in training.

Inputs: the first conv gets real values (uniform in [-1, 1], like a direct-coded image); every
other weight op gets spikes, Bernoulli with rate 0.15 as float32 0/1. tdBN gets normal values,
LIF gets N(0, (alpha*Vth)^2), the distribution tdBN produces. Upstream gradients are N(0, 1).
Backward kernels are fed the state that the NumPy forward produced, the same for both backends.

FLOP conventions (GFLOP/s = FLOPs / median time):

* conv, transposed conv, linear: forward = 2 * MACs of the dense product, zero padding
  included (conv: B*C_out*Ho*Wo*C_in*k*k; transposed conv: B*C_in*H*W*C_out*k*k, H x W its
  input). Backward = input gradient + weight gradient = 2 * forward (the bias sum is ignored).
* LIF and tdBN do so little arithmetic per byte that they are memory bound: their GFLOP/s is
  nominal, from the per-element counts in ``LIF_OPS`` and ``TDBN_OPS``. Their GB/s (in the
  JSON: bytes of the arrays passed in plus those returned, each counted once) says more.

A large dense matmul (``--ref-size``, default 2048 x 2048, float32) is timed in the same run as
the machine's reference; ``%ref`` is a kernel's GFLOP/s as a percentage of it.

Usage:  python bench/kernels.py [--quick] [--batch 16 64] [--repeats 7] [--out FILE] [--force]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

import snnvae  # noqa: F401  first: its thread settings precede NumPy's BLAS (snnvae/__init__)
import numba  # noqa: E402
import numpy as np  # noqa: E402

from snnvae import backend  # noqa: E402
from snnvae.kernels.numpy_ref import conv_out_size, conv_transpose_out_size  # noqa: E402

T = 16
VTH, TAU, AA, CENTER = 0.2, 0.25, 0.5, 0.0   # FSVAE LIF constants; surrogate centred at 0
EPS = 1e-5
SPIKE_RATE = 0.15
DTYPE = np.float32
# Nominal arithmetic per element (per neuron and time step for LIF; per value for tdBN):
LIF_OPS = {"fwd": 5,    # (1 - o), tau*u, *(1 - o), + x, compare with Vth
           "bwd": 11}   # reset path 3 (tau*u*gu, sub), surrogate 3 (sub, abs, compare),
#                         gu = g*sg + tau*(1 - o)*gu_next: 5
TDBN_OPS = {"fwd": 8,   # mean 1, variance 3 (sub, square, add), normalise 4 (sub, mul, mul, add)
            "bwd": 8}   # sums 3 (add, mul-add), input gradient 5
DEFAULT_OUT = ROOT / "bench" / "results" / "kernels.json"
QUICK_OUT = ROOT / "bench" / "results" / "kernels-quick.json"


@dataclass
class Layer:
    """One FSVAE-MNIST layer. ``size`` is the input height = width of a conv (0 for linear)."""
    name: str
    kind: str            # "conv", "convT" or "linear"
    c_in: int
    c_out: int
    size: int = 0
    stride: int = 1
    pad: int = 0
    out_pad: int = 0
    alpha: float = 1.0   # tdBN alpha (2 in the latent networks): sets the LIF input scale
    lif: bool = True
    quick: bool = False  # part of the --quick subset


LAYERS = [
    Layer("enc1", "conv", 1, 32, 32, 2, 1, quick=True),
    Layer("enc2", "conv", 32, 64, 16, 2, 1),
    Layer("enc3", "conv", 64, 128, 8, 2, 1),
    Layer("enc4", "conv", 128, 256, 4, 2, 1, quick=True),
    Layer("fc_enc", "linear", 1024, 128, quick=True),
    Layer("post1", "linear", 256, 256, alpha=2.0),
    Layer("post2", "linear", 256, 512, alpha=2.0),
    Layer("post3", "linear", 512, 2560, alpha=2.0, quick=True),
    Layer("fc_dec", "linear", 128, 1024),
    Layer("dec1", "convT", 256, 128, 2, 2, 1, 1, quick=True),
    Layer("dec2", "convT", 128, 64, 4, 2, 1, 1),
    Layer("dec3", "convT", 64, 32, 8, 2, 1, 1),
    Layer("dec4", "convT", 32, 32, 16, 2, 1, 1, quick=True),
    Layer("out", "convT", 32, 1, 32, 1, 1, 0, lif=False, quick=True),
]


@dataclass
class Case:
    """One kernel pair to time: names in the kernel module, their arguments, FLOPs."""
    layer: str
    kernel: str          # "conv", "convT", "linear", "tdbn" or "lif"
    shape: str           # per time step, for the table
    fwd: tuple           # (kernel name, args)
    bwd: tuple
    flops_fwd: float
    flops_bwd: float


# --------------------------------------------------------------------------------------------
# Building the cases
# --------------------------------------------------------------------------------------------


def spikes(rng, shape):
    return (rng.random(shape) < SPIKE_RATE).astype(DTYPE)


def normal(rng, shape, std=1.0):
    return (std * rng.standard_normal(shape)).astype(DTYPE)


def uniform_init(rng, shape, fan_in):
    """PyTorch's default init: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, shape).astype(DTYPE)


def weight_case(L: Layer, N: int, rng) -> tuple[Case, tuple]:
    """The conv / transposed conv / linear of layer L; also returns its output shape (B, ...)."""
    B = T * N
    first = L is LAYERS[0]
    if L.kind == "linear":
        x = spikes(rng, (B, L.c_in))
        w, b = uniform_init(rng, (L.c_out, L.c_in), L.c_in), uniform_init(rng, L.c_out, L.c_in)
        gy = normal(rng, (B, L.c_out))
        flops = 2.0 * B * L.c_in * L.c_out
        return Case(L.name, "linear", f"{L.c_in}->{L.c_out}",
                    ("linear_forward", (x, w, b)), ("linear_backward", (gy, x, w, True)),
                    flops, 2 * flops), (B, L.c_out)
    k, s, p = 3, L.stride, L.pad
    shape_in = (B, L.c_in, L.size, L.size)
    x = rng.uniform(-1, 1, shape_in).astype(DTYPE) if first else spikes(rng, shape_in)
    if L.kind == "conv":
        Ho = conv_out_size(L.size, k, s, p)
        fan_in = L.c_in * k * k
        w = uniform_init(rng, (L.c_out, L.c_in, k, k), fan_in)
        macs = B * L.c_out * Ho * Ho * L.c_in * k * k
        fwd = ("conv2d_forward", (x, w, uniform_init(rng, L.c_out, fan_in), s, p))
    else:
        Ho = conv_transpose_out_size(L.size, k, s, p, L.out_pad)
        fan_in = L.c_out * k * k    # PyTorch computes it from weight dim 1
        w = uniform_init(rng, (L.c_in, L.c_out, k, k), fan_in)
        macs = B * L.c_in * L.size * L.size * L.c_out * k * k
        fwd = ("conv_transpose2d_forward",
               (x, w, uniform_init(rng, L.c_out, fan_in), s, p, L.out_pad))
    gy = normal(rng, (B, L.c_out, Ho, Ho))
    bwd_name = "conv2d_backward" if L.kind == "conv" else "conv_transpose2d_backward"
    shape = f"{L.c_in}x{L.size}x{L.size}->{L.c_out}x{Ho}x{Ho}"
    return Case(L.name, L.kind, shape, fwd, (bwd_name, (gy, x, w, s, p, True)),
                2.0 * macs, 4.0 * macs), (B, L.c_out, Ho, Ho)


def tdbn_case(L: Layer, out_shape, rng, ref) -> Case:
    B, C, H, W = out_shape
    x = normal(rng, (B, C, H * W))
    gamma, beta = np.ones(C, DTYPE), np.zeros(C, DTYPE)
    scale = L.alpha * VTH
    _, xhat, invstd, _, _ = ref.tdbn_forward_train(x, gamma, beta, scale, EPS)
    gy = normal(rng, x.shape)
    return Case(L.name, "tdbn", f"C={C},S={H * W}",
                ("tdbn_forward_train", (x, gamma, beta, scale, EPS)),
                ("tdbn_backward_train", (gy, xhat, invstd, gamma, scale)),
                TDBN_OPS["fwd"] * x.size, TDBN_OPS["bwd"] * x.size)


def lif_case(L: Layer, out_shape, rng, ref) -> Case:
    M = int(np.prod(out_shape)) // T
    x = normal(rng, (T, M), std=L.alpha * VTH)
    o, u = ref.lif_forward(x, VTH, TAU, AA, CENTER, False)
    go = normal(rng, (T, M))
    return Case(L.name, "lif", f"M={M}",
                ("lif_forward", (x, VTH, TAU, AA, CENTER, False)),
                ("lif_backward", (go, u, o, TAU, AA, CENTER, False)),
                LIF_OPS["fwd"] * x.size, LIF_OPS["bwd"] * x.size)


def build_cases(layers, N, seed=0):
    rng = np.random.default_rng(seed)
    ref = backend.kernels("numpy")
    cases = []
    for L in layers:
        case, out_shape = weight_case(L, N, rng)
        cases.append(case)
        if L.kind != "linear" and L.lif:    # tdBN on conv outputs (the final conv has none)
            cases.append(tdbn_case(L, out_shape, rng, ref))
        if L.lif:
            cases.append(lif_case(L, out_shape, rng, ref))
    return cases


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def nbytes(values):
    return sum(v.nbytes for v in values if isinstance(v, np.ndarray))


def measure(fn, repeats, min_time):
    """Warm up once, then ``repeats`` timed repeats of ``number`` calls: returns a dict with the
    per-call median (s), all per-call repeat times, number, first-call time and the output."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    number = max(1, int(min_time / max(once, 1e-9)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    return dict(median_s=statistics.median(times), times_s=times, number=number,
                first_call_s=first, out=out)


def max_rel_err(outs, ref_outs):
    """max |a - r| / max |r| over every returned array (None entries skipped)."""
    err = 0.0
    for a, r in zip(outs, ref_outs):
        if isinstance(r, np.ndarray):
            scale = max(float(np.max(np.abs(r))), 1e-30)
            err = max(err, float(np.max(np.abs(np.asarray(a, np.float64) - r))) / scale)
    return err


def reference_matmul(n, repeats):
    """GFLOP/s of a dense float32 n x n matmul through NumPy's BLAS: the machine's yardstick."""
    rng = np.random.default_rng(1)
    a, b = normal(rng, (n, n)), normal(rng, (n, n))
    r = measure(lambda: a @ b, repeats, 0.2)
    return dict(n=n, median_s=r["median_s"], times_s=r["times_s"],
                gflops=2.0 * n ** 3 / r["median_s"] / 1e9)


def run_case(case, k, repeats, min_time, ref_gflops, ref_outs):
    """Time one case on kernel module k: a JSON-ready row (+ the outputs, for error checks)."""
    row = dict(layer=case.layer, kernel=case.kernel, shape=case.shape)
    outs = {}
    for phase, (name, args), flops in (("fwd", case.fwd, case.flops_fwd),
                                       ("bwd", case.bwd, case.flops_bwd)):
        fn = getattr(k, name)
        r = measure(lambda: fn(*args), repeats, min_time)
        out = as_tuple(r.pop("out"))
        outs[phase] = out
        t = r["median_s"]
        row[phase] = dict(kernel_fn=name, flops=flops, gflops=flops / t / 1e9,
                          pct_ref=100.0 * flops / t / 1e9 / ref_gflops,
                          gbytes_per_s=(nbytes(args) + nbytes(out)) / t / 1e9, **r)
        if ref_outs is not None:
            row[phase]["max_rel_err_vs_numpy"] = max_rel_err(out, ref_outs[phase])
    return row, outs


# --------------------------------------------------------------------------------------------
# Machine description, table, output file
# --------------------------------------------------------------------------------------------


def git(*cmd):
    try:
        return subprocess.run(["git", "-C", str(ROOT), *cmd], capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return ""


def machine():
    """What the numbers depend on: CPU, cores, threads, library versions, load, commit."""
    model = platform.processor() or "unknown"
    try:
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                 .splitlines() if ln.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{blas.get('name')} {blas.get('version')}"
    except Exception:   # older NumPy: no dict mode
        blas = "unknown"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    env = {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                          "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}
    return dict(cpu_model=model, logical_cores=os.cpu_count(), usable_cores=usable,
                numba_threads=numba.get_num_threads(), thread_env=env,
                platform=platform.platform(), python=platform.python_version(),
                numpy=np.__version__, numba=numba.__version__, blas=blas,
                git_commit=git("rev-parse", "HEAD"),
                git_dirty=bool(git("status", "--porcelain", "--untracked-files=no")),
                loadavg_start=os.getloadavg())


COLUMNS = [("N", 3), ("layer", 6), ("kernel", 6), ("shape", 18), ("backend", 7),
           ("fwd ms", 9), ("fwd GF/s", 8), ("fwd %ref", 8), ("bwd ms", 9), ("bwd GF/s", 8),
           ("bwd %ref", 8), ("speedup", 11), ("rel err", 7)]


def format_row(N, row, backend_name, speedup):
    f, b = row["fwd"], row["bwd"]
    err = max(f.get("max_rel_err_vs_numpy", -1), b.get("max_rel_err_vs_numpy", -1))
    cells = [N, row["layer"], row["kernel"], row["shape"], backend_name,
             f"{f['median_s'] * 1e3:.3f}", f"{f['gflops']:.2f}", f"{f['pct_ref']:.1f}",
             f"{b['median_s'] * 1e3:.3f}", f"{b['gflops']:.2f}", f"{b['pct_ref']:.1f}",
             speedup, "" if err < 0 else f"{err:.0e}"]
    return "  ".join(str(c).rjust(w) if i >= 5 or i == 0 else str(c).ljust(w)
                     for i, (c, (_, w)) in enumerate(zip(cells, COLUMNS)))


def choose_out(path: Path, force: bool) -> Path:
    """Never overwrite silently: an existing file is replaced only with --force; otherwise the
    results go to a new name with a timestamp, decided before the (long) run starts."""
    if path.exists() and not force:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        new = path.with_name(f"{path.stem}-{stamp}{path.suffix}")
        print(f"note: {path} exists; writing to {new} instead (use --force to overwrite)")
        return new
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, nargs="+", help="batch sizes N (default: 16 64; "
                    "16 with --quick)")
    ap.add_argument("--backends", nargs="+", default=list(backend.available()),
                    choices=backend.BACKENDS, help="default: those that can run here (cuda "
                    "only where numba finds a GPU)")
    ap.add_argument("--layers", nargs="+", help="only these layers (names as in the table)")
    ap.add_argument("--repeats", type=int, help="timed repeats per kernel (default 7; 3 quick)")
    ap.add_argument("--min-time", type=float, help="seconds per repeat; short kernels are "
                    "called several times per repeat (default 0.05; 0.01 quick)")
    ap.add_argument("--ref-size", type=int, default=2048, help="size of the reference matmul")
    ap.add_argument("--quick", action="store_true",
                    help="batch 16, 3 repeats, a subset of layers (a smoke test)")
    ap.add_argument("--out", type=Path, help=f"JSON file (default {DEFAULT_OUT.relative_to(ROOT)}"
                    f", or {QUICK_OUT.relative_to(ROOT)} with --quick)")
    ap.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    args = ap.parse_args(argv)
    if "cuda" in args.backends and "cuda" not in backend.available():
        from snnvae.kernels.cuda.launch import CudaUnavailableError, require_gpu
        try:
            require_gpu()
        except CudaUnavailableError as err:
            ap.error(f"--backends cuda: {err}")

    batches = args.batch or ([16] if args.quick else [16, 64])
    repeats = args.repeats or (3 if args.quick else 7)
    min_time = args.min_time if args.min_time is not None else (0.01 if args.quick else 0.05)
    layers = [L for L in LAYERS if (L.quick or not args.quick)
              and (not args.layers or L.name in args.layers)]
    if not layers:
        ap.error(f"no layer selected; names: {' '.join(L.name for L in LAYERS)}")
    out_path = choose_out(args.out or (QUICK_OUT if args.quick else DEFAULT_OUT), args.force)

    info = machine()
    print(f"CPU: {info['cpu_model']}, {info['usable_cores']} usable cores "
          f"({info['logical_cores']} logical), numba threads {info['numba_threads']}, "
          f"NumPy {info['numpy']} ({info['blas']}), Numba {info['numba']}, "
          f"load average {info['loadavg_start'][0]:.2f}")
    ref = reference_matmul(args.ref_size, max(repeats, 5))
    print(f"reference: {args.ref_size}x{args.ref_size} float32 matmul "
          f"{ref['median_s'] * 1e3:.1f} ms = {ref['gflops']:.1f} GFLOP/s (= 100 %ref)")
    print(f"T = {T}, float32, median of {repeats} repeats (>= {min_time} s each); inputs after "
          f"the first conv are Bernoulli({SPIKE_RATE}) spikes; LIF/tdBN GFLOP/s are nominal "
          f"({LIF_OPS} / {TDBN_OPS} ops per element)")
    print("speedup = numpy time / cpu time (fwd/bwd); rel err = max |cpu - numpy| / max |numpy|")
    print("  ".join(h.rjust(w) if i >= 5 or i == 0 else h.ljust(w)
                    for i, (h, w) in enumerate(COLUMNS)))

    rows = []
    for N in batches:
        for case in build_cases(layers, N):
            ref_outs, ref_row = None, None
            for name in args.backends:
                row, outs = run_case(case, backend.kernels(name), repeats, min_time,
                                     ref["gflops"], ref_outs)
                row.update(N=N, B=T * N, backend=name)
                speedup = ""
                if name == "numpy":
                    ref_outs, ref_row = outs, row
                elif ref_row is not None:
                    sf = ref_row["fwd"]["median_s"] / row["fwd"]["median_s"]
                    sb = ref_row["bwd"]["median_s"] / row["bwd"]["median_s"]
                    row["speedup_vs_numpy"] = dict(fwd=sf, bwd=sb)
                    speedup = f"{sf:.1f}/{sb:.1f}"
                rows.append(row)
                print(format_row(N, row, name, speedup), flush=True)

    info["loadavg_end"] = os.getloadavg()
    cores = info["usable_cores"] or 1   # this run itself keeps about `cores` threads busy
    busy = max(info["loadavg_start"][0], info["loadavg_end"][0] - cores) / cores
    if busy > 0.5:
        print(f"warning: load average per core reached {busy:.2f}: other processes were "
              f"running, the times are unreliable (Numba's parallel kernels suffer most)")
    try:
        info["numba_threading_layer"] = numba.threading_layer()
    except ValueError:      # no parallel Numba kernel ran (numpy backend only)
        info["numba_threading_layer"] = None
    result = dict(
        meta=dict(date=datetime.datetime.now().isoformat(timespec="seconds"),
                  command=" ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
                  mode="quick" if args.quick else "full", T=T, batches=batches,
                  dtype="float32", repeats=repeats, min_time_s=min_time, machine=info,
                  reference_matmul=ref,
                  inputs=f"first conv: uniform(-1, 1); other weight ops: Bernoulli({SPIKE_RATE})"
                         f" spikes as float32 0/1; tdBN: N(0, 1); LIF: N(0, (alpha*Vth)^2); "
                         f"upstream gradients N(0, 1); backward state from the numpy forward",
                  flops=dict(weight_ops="forward 2*MACs of the dense product (padding "
                                        "included); backward 2x forward (input + weight grad)",
                             lif_ops_per_element=LIF_OPS, tdbn_ops_per_element=TDBN_OPS,
                             note="LIF and tdBN GFLOP/s are nominal: these kernels are "
                                  "memory bound; see gbytes_per_s")),
        rows=rows)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out_path)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
