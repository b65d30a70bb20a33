"""Training: a tiny FSVAE learns, seeded runs reproduce bit for bit, an interrupted run resumed
from its checkpoint ends exactly where the uninterrupted run ends, and runs are protected."""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from snnvae import data, optim
from snnvae.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from snnvae.models import FSVAE, FSVAEConfig
from snnvae.train import RunExistsError, Trainer, TrainSettings, prepare_run_dir, read_metrics

TINY = FSVAEConfig(hidden_channels=(4, 8), input_size=8, latent_dim=8, k=4, timesteps=4)


def digits(n, split="train"):
    """Real MNIST digits from the embedded subset, shrunk to 8 x 8 (PIL-exact bilinear)."""
    images, _ = data.load_embedded_mnist(split)
    return data.prepare_images(images[:n], size=8)


def model(seed=0):
    return FSVAE(TINY, rng=np.random.default_rng([seed, 0]))


def settings(**kw):
    base = dict(epochs=2, batch_size=8, lr=3e-3, seed=0, checkpoint_every=0, samples=4)
    base.update(kw)
    return TrainSettings(**base)


def test_tiny_fsvae_overfits_a_fixed_batch():
    net = model()
    images = digits(16)
    opt = optim.AdamW(net.parameters(), lr=5e-3, weight_decay=1e-3)
    rng = np.random.default_rng(0)
    losses = []
    for step in range(120):
        out = net.training_losses(images, rng, 0, 1)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["recon"].item())
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5]), (losses[:5], losses[-10:])


def without_time(history):
    return [{k: v for k, v in row.items() if k != "train_minutes"} for row in history]


def run(tmp_path, name, **kw):
    trainer = Trainer(model(), digits(40), digits(16, "test"), prepare_run_dir(tmp_path / name),
                      settings(**kw), config_dict=TINY.to_dict(), progress=False)
    return trainer, trainer.run()


def test_seeded_runs_reproduce_bit_for_bit(tmp_path):
    a, hist_a = run(tmp_path, "a")
    b, hist_b = run(tmp_path, "b")
    assert without_time(hist_a) == without_time(hist_b)
    for (name, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    c, hist_c = run(tmp_path, "c", seed=1)
    assert hist_c[-1]["train_loss"] != hist_a[-1]["train_loss"]
    outputs = {p.name for p in (tmp_path / "a").iterdir()}
    assert {"metrics.csv", "curves.png", "reconstructions.png", "samples.png", "checkpoint.npz",
            "config.json", "samples_epoch002.png"} <= outputs
    assert [row["epoch"] for row in read_metrics(tmp_path / "a" / "metrics.csv")] == [1.0, 2.0]


def interrupt_during_step(net, n):
    """Make training step ``n`` of ``net`` send the process a real SIGINT (Ctrl-C)."""
    original, calls = net.training_losses, [0]

    def training_losses(*args):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args)

    net.training_losses = training_losses


def test_resume_after_ctrl_c_mid_epoch_matches_the_uninterrupted_run(tmp_path):
    reference, hist_ref = run(tmp_path, "ref", checkpoint_every=2)

    net = model()
    interrupt_during_step(net, 3)
    first = Trainer(net, digits(40), digits(16, "test"), prepare_run_dir(tmp_path / "cut"),
                    settings(checkpoint_every=2), config_dict=TINY.to_dict(), progress=False)
    partial = first.run()
    assert partial == [] and first.step_in_epoch == 3 and first.epoch == 0

    resumed = Trainer(model(seed=99), digits(40), digits(16, "test"),
                      prepare_run_dir(tmp_path / "cut", resume=True), settings(checkpoint_every=2),
                      config_dict=TINY.to_dict(), progress=False)
    resumed.restore()
    assert (resumed.epoch, resumed.step_in_epoch) == (0, 3)
    hist = resumed.run()
    assert without_time(hist) == without_time(hist_ref)
    for (name, p), (_, q) in zip(reference.model.named_parameters(), resumed.model.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)


def test_existing_run_is_never_overwritten_without_force(tmp_path):
    run(tmp_path, "r", epochs=1)
    with pytest.raises(RunExistsError, match="--force"):
        prepare_run_dir(tmp_path / "r")
    prepare_run_dir(tmp_path / "r", force=True)
    assert not (tmp_path / "r" / "checkpoint.npz").exists()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        prepare_run_dir(tmp_path / "empty", resume=True)


def test_checkpoint_errors_are_clear(tmp_path):
    net = model()
    path = save_checkpoint(tmp_path / "c.npz", model=net, meta={"epoch": 1})
    state, _, meta, _ = load_checkpoint(path)
    assert meta["epoch"] == 1 and set(state) == set(net.state_dict())
    (tmp_path / "bad.npz").write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "bad.npz")
    other = FSVAE(TINY.replace(latent_dim=6), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="shapes do not fit"):
        other.load_state_dict(state)
    trainer = Trainer(other, digits(8), digits(8, "test"), tmp_path, settings(),
                      config_dict=TINY.replace(latent_dim=6).to_dict(), progress=False)
    save_checkpoint(tmp_path / "checkpoint.npz", model=net, optimizer=optim.AdamW(net.parameters()),
                    meta={"model": "FSVAE", "config": TINY.to_dict(), "epoch": 0})
    with pytest.raises(ValueError, match="another model configuration"):
        trainer.restore()


def test_resume_from_an_epoch_end_checkpoint_and_refusal_of_other_settings(tmp_path):
    _, hist_ref = run(tmp_path, "ref")                       # two epochs straight
    first = Trainer(model(), digits(40), digits(16, "test"), prepare_run_dir(tmp_path / "two"),
                    settings(epochs=1), config_dict=TINY.to_dict(), progress=False)
    first.run()
    more = Trainer(model(seed=5), digits(40), digits(16, "test"),
                   prepare_run_dir(tmp_path / "two", resume=True), settings(epochs=2),
                   config_dict=TINY.to_dict(), progress=False)
    more.restore()                                           # epochs may change
    assert (more.epoch, more.step_in_epoch) == (1, 0)
    assert without_time(more.run()) == without_time(hist_ref)
    for changed, data_size in [(settings(batch_size=4), 40), (settings(), 32)]:
        other = Trainer(model(), digits(data_size), digits(16, "test"), tmp_path / "two", changed,
                        config_dict=TINY.to_dict(), progress=False)
        with pytest.raises(ValueError, match="cannot resume"):
            other.restore()
