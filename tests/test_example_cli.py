"""examples/mnist_fsvae.py refuses bad requests with clear messages, before doing any work."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("mnist_fsvae", ROOT / "examples" / "mnist_fsvae.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exit_message(example, argv, capsys):
    with pytest.raises(SystemExit) as info:
        example.main(argv)
    return str(info.value.code) + capsys.readouterr().err


def test_existing_run_is_refused_without_resume_or_force(example, tmp_path, capsys):
    (tmp_path / "metrics.csv").write_text("epoch\n1\n")
    message = exit_message(example, ["--out", str(tmp_path)], capsys)
    assert "already holds a run" in message and "--force" in message
    assert (tmp_path / "metrics.csv").exists()                  # nothing was deleted


def test_resume_without_checkpoint_names_the_likely_cause(example, tmp_path, capsys):
    message = exit_message(example, ["--out", str(tmp_path / "none"), "--resume"], capsys)
    assert "no checkpoint.npz" in message and "--preset" in message


@pytest.mark.parametrize("argv,text", [
    (["--epochs", "0"], "positive integer"),
    (["--timesteps", "-1"], "positive integer"),
    (["--lr", "0"], "positive number"),
    (["--device", "cuda"], "not available yet"),
    (["--dataset", "cifar"], "invalid choice"),
])
def test_bad_arguments(example, tmp_path, capsys, argv, text):
    assert text in exit_message(example, argv + ["--out", str(tmp_path / "x")], capsys)


def test_quick_and_paper_presets_are_what_the_readme_says(example):
    config, settings = example.build(example.parse_args([]))
    for key, value in example.QUICK.items():
        assert getattr(config, key) == value, key
    for key, value in example.QUICK_TRAINING.items():
        assert getattr(settings, key) == value, key
    assert config.input_size == 32 and config.in_channels == 1        # the papers' 32 x 32 MNIST
    config, settings = example.build(example.parse_args(["--timesteps", "6", "--epochs", "2"]))
    assert config.timesteps == 6 and settings.epochs == 2
    config, settings = example.build(example.parse_args(["--preset", "paper"]))
    assert (config.timesteps, config.latent_dim, config.k) == (16, 128, 20)
    assert config.hidden_channels == (32, 64, 128, 256)
    assert (settings.batch_size, settings.lr, settings.weight_decay, settings.epochs) == (250, 1e-3, 1e-3, 150)
    assert settings.lr_schedule == "constant"
