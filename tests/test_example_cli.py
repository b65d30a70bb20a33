"""examples/mnist_fsvae.py refuses bad requests with clear messages, before doing any work."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from snnvae.kernels.cuda.launch import gpu_found

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
    pytest.param(["--device", "cuda"], "no CUDA GPU was found",
                 marks=pytest.mark.skipif(gpu_found(), reason="this machine has a GPU")),
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


def test_model_choice_builds_each_registered_model_with_its_presets(example):
    from snnvae.models import ESVAE, ESVAEConfig, FSVAE
    from snnvae.models.registry import MODELS
    assert example.parse_args([]).model == "fsvae"                      # the documented default
    assert {"fsvae", "esvae"} <= set(example.MODEL_CHOICES)
    assert all(example.MODEL_NAMES[m] in MODELS for m in example.MODEL_CHOICES)
    config, settings = example.build(example.parse_args(["--model", "esvae"]))
    assert isinstance(config, ESVAEConfig)
    for key, value in example.ESVAE_QUICK.items():
        assert getattr(config, key) == value, key
    for key, value in example.ESVAE_QUICK_TRAINING.items():
        assert getattr(settings, key) == value, key
    model = example.build_model("ESVAE", config.to_dict(), seed=[0, 0])
    assert isinstance(model, ESVAE) and [g["lr_scale"] for g in model.parameter_groups()] == [1, 10]
    assert isinstance(example.build_model("FSVAE", example.build(example.parse_args([]))[0].to_dict()),
                      FSVAE)


def test_esvae_paper_preset_scales_the_learning_rate_by_batch_over_250(example):
    config, settings = example.build(example.parse_args(["--model", "esvae", "--preset", "paper"]))
    assert (config.timesteps, config.latent_dim, config.hidden_channels) == (16, 32, (32, 64, 128, 256))
    assert (settings.batch_size, settings.epochs, settings.weight_decay) == (256, 300, 1e-3)
    assert settings.lr == pytest.approx(0.003 * 256 / 250) and settings.lr_schedule == "constant"
    config, settings = example.build(example.parse_args(["--model", "esvae", "--preset", "paper",
                                                         "--batch-size", "64"]))
    assert settings.lr == pytest.approx(0.003 * 64 / 250)
    _, settings = example.build(example.parse_args(["--model", "esvae", "--preset", "paper",
                                                    "--lr", "0.01"]))
    assert settings.lr == 0.01                                          # an explicit --lr wins
    config, _ = example.build(example.parse_args(["--model", "esvae", "--dataset", "fashion",
                                                  "--timesteps", "6"]))
    assert config.timesteps == 6 and config.latent_dim == 32


def test_ann_choice_when_registered(example, tmp_path, capsys):
    if "ann" not in example.MODEL_CHOICES:
        pytest.skip("the ANN VAE is not registered")
    from snnvae.models import ANN_PAPER_TRAINING, ANN_QUICK, ANNVAEConfig
    config, settings = example.build(example.parse_args(["--model", "ann"]))
    assert isinstance(config, ANNVAEConfig) and config.latent_dim == ANN_QUICK["model"]["latent_dim"]
    assert settings.batch_size == ANN_QUICK["training"]["batch_size"]
    _, settings = example.build(example.parse_args(["--model", "ann", "--preset", "paper"]))
    assert (settings.lr, settings.batch_size) == (ANN_PAPER_TRAINING["lr"], ANN_PAPER_TRAINING["batch_size"])
    message = exit_message(example, ["--model", "ann", "--timesteps", "4",
                                     "--out", str(tmp_path / "x")], capsys)
    assert "--timesteps does not apply" in message


def test_unknown_model_is_refused(example, tmp_path, capsys):
    message = exit_message(example, ["--model", "vqvae", "--out", str(tmp_path / "x")], capsys)
    assert "invalid choice" in message and "esvae" in message
