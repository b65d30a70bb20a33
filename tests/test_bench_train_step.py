"""bench/train_step.py end to end in its tiny mode: one training configuration and the two eval
configurations of FSVAE, each in its own subprocess; the JSON fields and their arithmetic, the
Markdown summary, and the clear refusals (cuda, unknown model)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from snnvae.kernels.cuda.launch import gpu_found

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "train_step.py"


def run(*args, timeout=120):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_tiny_run_writes_json_and_markdown(tmp_path):
    out = tmp_path / "train_step.json"
    proc = run("--tiny", "--models", "FSVAE", "--batch-sizes", "2", "--steps", "2", "--warmup",
               "1", "--eval-batch", "2", "--eval-repeats", "1", "--ref-size", "128",
               "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    meta = result["meta"]
    assert meta["tiny"] and meta["device"] == "cpu" and meta["models"] == ["FSVAE"]
    ref = meta["reference_matmul"]
    assert ref["n"] == 128 and ref["gflops"] > 0 and meta["reference_matmul_end"]["gflops"] > 0
    assert meta["machine"]["usable_cores"] >= 1 and "mnist" in meta["data"].lower()
    assert result["errors"] == []

    (train,) = result["train"]
    assert train["model"] == "FSVAE" and train["batch_size"] == 2
    assert train["config"]["timesteps"] == 2                        # the tiny change applied
    assert len(train["step_s"]) == 2 and len(train["warmup_step_s"]) == 1
    assert train["images_per_s"] == pytest.approx(2 / train["median_step_s"])
    macs = train["dense_macs_per_image"]
    assert macs["forward_no_grad"] > 0                              # the posterior prefix loop
    assert macs["total"] == pytest.approx(macs["forward"] + macs["backward"]) and macs["backward"] > 0
    assert train["gflops"] == pytest.approx(2 * macs["total"] * train["images_per_s"] / 1e9)
    assert train["fraction_of_matmul"] == pytest.approx(train["gflops"] / ref["gflops"])
    assert train["peak_rss_mb"] > 20 and train["baseline_rss_mb"] > 20
    for key in ("module_forward_shares", "kernel_shares"):
        assert 0 < sum(train[key].values()) <= 1.05, key
    assert {"encoder", "posterior", "decoder"} <= set(train["module_forward_shares"])
    assert "conv2d_backward" in train["kernel_shares"]

    kinds = {r["kind"]: r for r in result["eval"]}
    assert set(kinds) == {"reconstruct", "sample"}
    for r in kinds.values():
        assert r["batch_size"] == 2 and len(r["call_s"]) == 1
        assert r["images_per_s"] == pytest.approx(2 / r["median_call_s"])
        assert r["dense_macs_per_image"]["backward"] == 0
        assert r["fraction_of_matmul"] == pytest.approx(r["gflops"] / ref["gflops"])
        assert r["operations_per_image"]["ac"] > 0
    assert "encoder.0" in kinds["reconstruct"]["firing_rates"]

    md = out.with_suffix(".md").read_text()
    assert "## Training step" in md and "| FSVAE | 2 |" in md and "TINY" in md
    assert "reconstruct" in md and "sample" in md and "% of matmul" in md


def test_cuda_without_a_gpu_and_unknown_models_are_refused_clearly(tmp_path):
    if not gpu_found():
        proc = run("--device", "cuda", "--out", str(tmp_path / "x.json"))
        assert proc.returncode == 2 and "no CUDA GPU was found" in proc.stderr
        assert "cuda.detect()" in proc.stderr and "--device cpu" in proc.stderr
    proc = run("--models", "NoSuchVAE", "--out", str(tmp_path / "x.json"))
    assert proc.returncode == 2 and "NoSuchVAE" in proc.stderr
    assert not (tmp_path / "x.json").exists()
