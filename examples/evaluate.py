"""Evaluate a trained model the way the FSVAE and ESVAE papers do, and put the papers' numbers
beside ours.

    python examples/evaluate.py runs/fsvae_mnist_quick             # a run directory
    python examples/evaluate.py runs/x/checkpoint.npz --max-images 1000 --samples 1000
    python examples/evaluate.py RUN --ae-weights ~/weights/fsvae_ae_mnist_64.pth --bn-mode eval

Columns (shared/REFERENCE.md): reconstruction MSE on the test split (images in [-1, 1],
32 x 32); AE-FD, the Frechet distance between the features of generated images (5000) and of
the test set, both embedded by the papers' pretrained autoencoder (its official weights, found
through --ae-weights, $SNNVAE_AE_WEIGHTS, $SNNVAE_SHARED/ref, ~/.cache/snnvae/ref or
../shared/ref; AE-FD is skipped with a note when they are absent); synaptic operations per
image (accumulates for spike inputs plus multiply-accumulates for real inputs, from
snnvae.metrics.operations when it is installed) and their energy estimate; firing rates.

Writes evaluation.md and evaluation.json next to the checkpoint (``<stem>_evaluation.*`` for a
checkpoint not named checkpoint.npz; --out for another folder); refuses to overwrite them
without --force. The data come as in examples/mnist_fsvae.py: a run trained on the embedded
MNIST subset is evaluated on its 2000 test digits unless --full-data or --data-dir is given
(the papers use all 10000: such numbers are marked as not comparable).
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import snnvae  # noqa: F401  first: its thread settings precede NumPy's BLAS (snnvae/__init__)
import numpy as np

from snnvae import data
from snnvae.checkpoint import CheckpointError
from snnvae.metrics import aefd
from snnvae.metrics.reconstruction import reconstruction_metrics
from snnvae.models.registry import model_from_checkpoint

DATASET_NAMES = {"mnist": "mnist", "fashion": "fashion-mnist"}
FULL_TEST = 10_000
# The papers' test-set numbers (shared/REFERENCE.md): FSVAE, Kamata et al., AAAI 2022; ESVAE and
# the ANN VAE row, Zhan et al. 2023. (recon MSE, AE-FD)
PAPERS = {
    "mnist": {"ANN VAE": (0.048, 17.09), "FSVAE": (0.031, 35.54), "ESVAE": (0.013, 10.99)},
    "fashion-mnist": {"ANN VAE": (0.050, 18.08), "FSVAE": (0.031, 15.75), "ESVAE": (0.019, 11.13)},
}
PAPER_SOURCE = ("FSVAE: Kamata et al., AAAI 2022; ESVAE and ANN VAE: Zhan et al. 2023 "
                "(as gathered in shared/REFERENCE.md)")
ROW_NAMES = {"ANNVAE": "ANN VAE", "FSVAE": "FSVAE", "ESVAE": "ESVAE"}


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="run directory (holding checkpoint.npz) or checkpoint file")
    p.add_argument("--dataset", choices=sorted(DATASET_NAMES), default=None,
                   help="default: the data set the run was trained on")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="directory with the four IDX files (default: the data search path)")
    p.add_argument("--full-data", action="store_true",
                   help="a run trained on the embedded MNIST subset: evaluate on the full test "
                        "set from the search path instead of the 2000 embedded test digits")
    p.add_argument("--max-images", type=positive_int, default=None,
                   help="reconstruction MSE on the first N test images only (default: all)")
    p.add_argument("--batch-size", type=positive_int, default=250)
    p.add_argument("--samples", type=positive_int, default=aefd.DEFAULT_SAMPLES,
                   help="generated images for AE-FD (the papers: 5000)")
    p.add_argument("--ae-weights", type=Path, default=None,
                   help="the feature autoencoder's .pth file (or its folder)")
    p.add_argument("--bn-mode", choices=["trainbn", "eval"], default="trainbn",
                   help="the autoencoder's BatchNorm: batch statistics as the papers "
                        "(default) or running statistics")
    p.add_argument("--no-aefd", action="store_true", help="skip AE-FD")
    p.add_argument("--ops-images", type=positive_int, default=64,
                   help="test images the operation count averages over")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="folder for the report (default: "
                                                          "the checkpoint's)")
    p.add_argument("--force", action="store_true", help="overwrite an existing report")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def report_paths(args):
    checkpoint = args.run / "checkpoint.npz" if args.run.is_dir() else args.run
    stem = "evaluation" if checkpoint.stem == "checkpoint" else f"{checkpoint.stem}_evaluation"
    folder = args.out or checkpoint.parent
    return checkpoint, folder / f"{stem}.md", folder / f"{stem}.json"


def load_test_images(args, meta, size):
    """-> (images (n, 1, size, size) float32, data set name, source)."""
    trained_on = meta.get("data", {}).get("source", "embedded-mnist")
    if args.dataset is not None:
        dataset = DATASET_NAMES[args.dataset]
    else:
        dataset = "mnist" if trained_on == "embedded-mnist" else trained_on
    embedded = (dataset == "mnist" and trained_on == "embedded-mnist" and args.data_dir is None
                and not args.full_data)
    source = "embedded-mnist" if embedded else dataset
    u8, _ = data.load_split(source, "test", args.data_dir)
    return data.prepare_images(u8, size), dataset, source


def operations(model, images, rng):
    """Per-image operation counts and energy, or {'unavailable': reason}."""
    try:
        ops = importlib.import_module("snnvae.metrics.operations")
    except ImportError as err:
        return {"unavailable": f"snnvae.metrics.operations is not installed ({err})"}
    try:
        counts = ops.count_operations(model, images, rng)
        energy = ops.energy_estimate(counts) if hasattr(ops, "energy_estimate") else None
    except Exception as err:   # the column is optional; report why it is empty
        return {"unavailable": f"count_operations failed: {type(err).__name__}: {err}"}
    total = counts.get("total", {})
    out = {"images": int(len(images)), "ac": total.get("ac"), "mac": total.get("mac"),
           "neuron_updates": total.get("neuron_updates"),
           "synaptic_ops": total.get("synaptic_ops"), "by_module": counts.get("by_module"),
           "notes": counts.get("notes")}
    if energy is not None:
        out.update(energy_uj=energy.get("total_uj"), energy_per_op_pj=energy.get("energy_per_op_pj"),
                   energy_source=energy.get("source"))
    return out


def describe_model(meta):
    name = meta.get("model", "FSVAE")
    c = meta.get("config", {})
    parts = [f"{k} {c[key]}" for k, key in (("T", "timesteps"), ("latent", "latent_dim"),
                                             ("k", "k")) if key in c]
    if "hidden_channels" in c:
        parts.append("channels " + "-".join(str(v) for v in c["hidden_channels"]))
    epochs = meta.get('epoch', '?')
    parts.append(f"{epochs} epoch{'' if epochs == 1 else 's'}")
    return f"{ROW_NAMES.get(name, name)} (this run: {', '.join(parts)})"


def _num(value, fmt):
    return "—" if value is None else format(value, fmt)


def _si(value, unit=""):
    if value is None:
        return "—"
    for factor, prefix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()


def markdown(result):
    rec, fd, ops = result["reconstruction"], result["aefd"], result["operations"]
    lines = [f"# Evaluation of `{result['checkpoint']}`", "",
             f"Data set: {result['dataset']} ({result['data_source']}, {rec['images']} test "
             f"images for the MSE).", "",
             "| model | recon MSE | AE-FD | synaptic ops / image | energy / image (µJ) | mean firing rate |",
             "|---|---|---|---|---|---|",
             f"| {result['model_description']} | {rec['mse']:.4f} | {_num(fd.get('aefd'), '.2f')} | "
             f"{_si(ops.get('synaptic_ops'))} | {_num(ops.get('energy_uj'), '.3g')} | "
             f"{_num(rec['mean_firing_rate'], '.4f')} |"]
    for name, (mse, paper_fd) in PAPERS.get(result["dataset"], {}).items():
        lines.append(f"| {name} (paper) | {mse:.3f} | {paper_fd:.2f} | — | — | — |")
    lines += ["", f"Papers' numbers: {PAPER_SOURCE}.", ""]
    if rec["firing_rates"]:
        lines += ["## Firing rates per spiking layer", "", "| layer | firing rate |", "|---|---|"]
        lines += [f"| {name} | {rate:.4f} |" for name, rate in rec["firing_rates"].items()]
        lines.append("")
    if ops.get("by_module"):
        lines += ["## Operations per image by module", "",
                  "| module | AC | MAC | neuron updates |", "|---|---|---|---|"]
        lines += [f"| {m} | {_si(r.get('ac'))} | {_si(r.get('mac'))} | {_si(r.get('neuron_updates'))} |"
                  for m, r in ops["by_module"].items()]
        lines.append("")
    lines += ["## Notes", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    checkpoint, md_path, json_path = report_paths(args)
    if not checkpoint.is_file():
        sys.exit(f"error: no checkpoint at {checkpoint} (give a run directory holding "
                 f"checkpoint.npz, or a checkpoint file)")
    existing = [p for p in (md_path, json_path) if p.exists()]
    if existing and not args.force:
        sys.exit(f"error: {', '.join(map(str, existing))} already exists; pass --force to "
                 f"overwrite it or --out to write elsewhere")
    if args.ae_weights is not None and not args.ae_weights.exists():
        sys.exit(f"error: --ae-weights {args.ae_weights} does not exist")
    try:
        model, meta = model_from_checkpoint(checkpoint)
    except (CheckpointError, KeyError, ValueError) as err:
        sys.exit(f"error: cannot rebuild the model from {checkpoint}: {err}")
    config = meta.get("config", {})
    size = config.get("input_size", 32)
    try:
        test_images, dataset, source = load_test_images(args, meta, size)
    except data.DataError as err:
        sys.exit(f"error: {err}")
    progress = not args.no_progress
    notes = []
    start = time.perf_counter()

    recon_images = test_images[:args.max_images] if args.max_images else test_images
    print(f"model: {describe_model(meta)}; {model.num_parameters():,} parameters")
    print(f"reconstruction MSE on {len(recon_images)} test images of {dataset} ({source})")
    rec = reconstruction_metrics(model, recon_images, np.random.default_rng([args.seed, 1]),
                                 args.batch_size, progress)
    if source == "embedded-mnist" or len(recon_images) < FULL_TEST:
        notes.append(f"Reconstruction MSE over {len(recon_images)} test images; the papers use "
                     f"all {FULL_TEST}: not directly comparable.")

    fd = {"skipped": "--no-aefd"} if args.no_aefd else None
    if fd is None and (config.get("in_channels", 1) != 1 or size != 32):
        fd = {"skipped": f"the AE-FD autoencoder takes 1 x 32 x 32 images; this model makes "
                         f"{config.get('in_channels')} x {size} x {size}"}
    if fd is None:
        try:
            weights = aefd.find_ae_weights(dataset, args.ae_weights)
        except FileNotFoundError as err:
            if args.ae_weights is not None:
                sys.exit(f"error: {err}")
            fd = {"skipped": f"feature autoencoder weights not found ({str(err).splitlines()[0]} "
                             f"Pass --ae-weights PATH)"}
            print(f"AE-FD skipped: {err}")
    if fd is None:
        print(f"AE-FD: {args.samples} generated images against {len(test_images)} test images "
              f"({args.bn_mode} BatchNorm), autoencoder {weights}")
        fd = aefd.autoencoder_frechet_distance(
            model, test_images, weights, dataset=source, rng=np.random.default_rng([args.seed, 2]),
            n_samples=args.samples, bn_mode=args.bn_mode, progress=progress)
        if fd["cached"]:
            print(f"  test-set statistics read from the cache {fd['cache_file']}")
        if args.samples != aefd.DEFAULT_SAMPLES or len(test_images) != FULL_TEST \
                or args.bn_mode != "trainbn":
            notes.append(f"AE-FD with {args.samples} samples against {len(test_images)} test "
                         f"images, {args.bn_mode} BatchNorm; the papers: {aefd.DEFAULT_SAMPLES} "
                         f"samples, {FULL_TEST} test images, trainbn: not directly comparable.")
        else:
            notes.append("AE-FD as the papers: 5000 samples, the full test set, the autoencoder's "
                         "BatchNorm on batch statistics (batches of 256).")
    else:
        notes.append(f"AE-FD skipped: {fd['skipped']}")

    print(f"operation counts on {min(args.ops_images, len(test_images))} test images")
    ops = operations(model, test_images[:args.ops_images], np.random.default_rng([args.seed, 3]))
    if "unavailable" in ops:
        print(f"  operations column unavailable: {ops['unavailable']}")
        notes.append(f"Operation counts unavailable: {ops['unavailable']}")
    else:
        notes.append(f"Operations per image averaged over {ops['images']} test images in eval "
                     f"mode (reconstruction pass): synaptic ops = AC + MAC. Energy: "
                     f"{ops.get('energy_source', 'not estimated')}.")

    result = {"checkpoint": str(checkpoint), "model": meta.get("model", "FSVAE"),
              "model_description": describe_model(meta), "config": config,
              "epoch": meta.get("epoch"), "dataset": dataset, "data_source": source,
              "reconstruction": rec, "aefd": fd, "operations": ops,
              "papers": {k: {"recon_mse": v[0], "aefd": v[1]}
                         for k, v in PAPERS.get(dataset, {}).items()},
              "papers_source": PAPER_SOURCE, "notes": notes,
              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "seconds": round(time.perf_counter() - start, 1)}
    text = markdown(result)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(text)
    json_path.write_text(json.dumps(result, indent=2, default=float))
    print("\n" + text)
    print(f"written: {md_path}, {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
