"""examples/evaluate.py on a tiny FSVAE trained for one epoch here: the report files, the
reconstruction MSE recomputed by hand, AE-FD when the official weights are present, the papers'
rows, and its refusals."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from snnvae import data
from snnvae.models import FSVAE, FSVAEConfig
from snnvae.models.registry import model_from_checkpoint
from snnvae.train import Trainer, TrainSettings

ROOT = Path(__file__).resolve().parents[1]
CONFIG = FSVAEConfig(hidden_channels=(4, 4, 8, 8), latent_dim=8, k=2, timesteps=2)


@pytest.fixture(scope="module")
def evaluate():
    spec = importlib.util.spec_from_file_location("evaluate", ROOT / "examples" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One epoch on 32 embedded training digits."""
    out = tmp_path_factory.mktemp("run")
    train_u8, _ = data.load_embedded_mnist("train")
    test_u8, _ = data.load_embedded_mnist("test")
    model = FSVAE(CONFIG, rng=np.random.default_rng(0))
    settings = TrainSettings(epochs=1, batch_size=16, eval_images=16, samples=4, seed=0)
    Trainer(model, data.prepare_images(train_u8[:32]), data.prepare_images(test_u8[:16]), out,
            settings, config_dict=CONFIG.to_dict(), progress=False,
            data_info={"source": "embedded-mnist"}).run()
    return out


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """AE-FD caches test statistics in the user cache: keep that inside the test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def weights_found():
    from snnvae.metrics.aefd import find_ae_weights
    try:
        return find_ae_weights("mnist")
    except FileNotFoundError:
        return None


def test_report_of_a_trained_run(evaluate, run_dir, capsys):
    argv = [str(run_dir), "--max-images", "40", "--samples", "300", "--ops-images", "4",
            "--no-progress"]
    assert evaluate.main(argv) == 0
    printed = capsys.readouterr().out
    md, js = run_dir / "evaluation.md", run_dir / "evaluation.json"
    assert md.exists() and js.exists()
    result = json.loads(js.read_text())
    assert result["model"] == "FSVAE" and result["dataset"] == "mnist"
    assert result["data_source"] == "embedded-mnist"

    # the MSE by hand: one batch (40 < 250) with the script's generator
    model, _ = model_from_checkpoint(run_dir)
    model.eval()
    images = data.prepare_images(data.load_embedded_mnist("test")[0][:40])
    recon = model.reconstruct(images, np.random.default_rng([0, 1]))
    mse = float(np.mean((recon.astype(np.float64) - images) ** 2))
    assert result["reconstruction"]["images"] == 40
    assert result["reconstruction"]["mse"] == pytest.approx(mse, rel=1e-6)
    rates = result["reconstruction"]["firing_rates"]
    assert set(rates) >= {"encoder.0", "before_latent_layer", "decoder.0", "final_layer.0"}
    assert all(0 <= r <= 1 for r in rates.values())

    text = md.read_text()
    assert "| FSVAE (paper) | 0.031 | 35.54 |" in text and "ESVAE (paper)" in text
    assert f"{result['reconstruction']['mse']:.4f}" in text and text in printed
    assert "not directly comparable" in text          # 40 embedded images, not the papers' 10000
    if weights_found() is not None:
        fd = result["aefd"]
        assert fd["n_samples"] == 300 and fd["test_images"] == 2000 and fd["bn_mode"] == "trainbn"
        assert np.isfinite(fd["aefd"]) and fd["aefd"] > 0
        assert f"{fd['aefd']:.2f}" in text
    else:
        assert "skipped" in result["aefd"]
    ops = result["operations"]
    if importlib.util.find_spec("snnvae.metrics.operations") is not None \
            and "unavailable" not in ops:
        assert ops["synaptic_ops"] > 0 and ops["images"] == 4
    else:
        assert "unavailable" in text.lower()


def test_existing_report_is_kept_without_force(evaluate, run_dir, capsys):
    (run_dir / "evaluation.md").write_text("keep me")
    argv = [str(run_dir), "--max-images", "8", "--no-aefd", "--ops-images", "1", "--no-progress"]
    with pytest.raises(SystemExit) as info:
        evaluate.main(argv)
    assert "--force" in str(info.value.code)
    assert (run_dir / "evaluation.md").read_text() == "keep me"
    assert evaluate.main(argv + ["--force"]) == 0
    result = json.loads((run_dir / "evaluation.json").read_text())
    assert result["aefd"] == {"skipped": "--no-aefd"}
    assert "AE-FD skipped" in (run_dir / "evaluation.md").read_text()


def test_other_folder_and_named_checkpoint(evaluate, run_dir, tmp_path):
    named = tmp_path / "best.npz"
    named.write_bytes((run_dir / "checkpoint.npz").read_bytes())
    assert evaluate.main([str(named), "--max-images", "4", "--no-aefd", "--ops-images", "1",
                          "--no-progress", "--out", str(tmp_path / "reports")]) == 0
    assert (tmp_path / "reports" / "best_evaluation.md").exists()
    assert (tmp_path / "reports" / "best_evaluation.json").exists()


@pytest.mark.parametrize("argv,text", [
    (["{missing}"], "no checkpoint"),
    (["{run}", "--ae-weights", "{missing}"], "does not exist"),
    (["{run}", "--max-images", "0"], "positive integer"),
    (["{run}", "--bn-mode", "train"], "invalid choice"),
])
def test_bad_requests(evaluate, run_dir, tmp_path, capsys, argv, text):
    argv = [a.format(run=run_dir, missing=tmp_path / "nothing") for a in argv]
    with pytest.raises(SystemExit) as info:
        evaluate.main(argv + ["--out", str(tmp_path / "o"), "--no-progress"])
    assert text in str(info.value.code) + capsys.readouterr().err
