"""The small whole FSVAE of ../shared/golden (latent 16, k 4, T 6; 836,817 parameters) in eval
and in training mode: outputs, losses, every gradient and the tdBN running statistics after the
call, with the posterior's one-of-k picks replayed from the official run. float64.

Spikes, outputs and losses must match to 1e-10. Gradients: the official spike function rounds
every gradient passing through it to float32, and a gradient of this model passes up to 16 LIF
layers, so official and exact float64 gradients differ by up to ~2.5e-7 (relative, median) and
2.3e-7 of a tensor's largest entry (measured). We allow rtol 1e-5 or 1e-6 * max|grad|."""
from __future__ import annotations

import numpy as np

from snnvae.latent import ReplayPicks
from snnvae.models import FSVAE, FSVAEConfig
from snnvae.models.official import convert_official_fsvae_state
from conftest import time_last

CONFIG = FSVAEConfig(latent_dim=16, k=4, timesteps=6)


def official_model(golden):
    w = golden("fsvae_small_weights")
    state = {n: w["q." + n].astype(np.float64) * 2.0 ** int(w["e." + n]) for n in w["param_names"]}
    state.update({n: w["buf." + n] for n in w["buffer_names"]})
    model = FSVAE(CONFIG, rng=np.random.default_rng(0), dtype=np.float64)
    model.load_state_dict(convert_official_fsvae_state(state, CONFIG.timesteps))
    return model, state


def recorded_picks(golden):
    ev = golden("fsvae_small_eval")
    picks = ev["posterior_randint_calls"]            # (T, B*C), batch-major
    return ReplayPicks(picks.reshape(CONFIG.timesteps, -1, CONFIG.latent_dim)), ev


def latent_to_official(a):
    """ours (T, N, C, k) / (T, N, C) -> official (N, C, k, T) / (N, C, T)."""
    return time_last(a)


def test_eval_forward_matches_official(golden, backend_name):
    model, _ = official_model(golden)
    model.eval()
    picks, ev = recorded_picks(golden)
    out = model(ev["real_img"], picker=picks)
    np.testing.assert_array_equal(latent_to_official(out.q_z.data), ev["q_z"])
    np.testing.assert_array_equal(latent_to_official(out.p_z.data), ev["p_z"])
    np.testing.assert_array_equal(latent_to_official(out.z.data), ev["sampled_z"])
    np.testing.assert_allclose(out.reconstruction.data, ev["x_recon"], rtol=1e-10, atol=1e-12)


def test_training_forward_loss_gradients_and_bn_stats_match_official(golden, backend_name):
    model, initial = official_model(golden)
    model.train()
    picks, ev = recorded_picks(golden)
    tr = golden("fsvae_small_train")
    images = ev["real_img"]
    out = model(images, picker=picks)              # scheduled sampling off, as in the golden run
    np.testing.assert_array_equal(latent_to_official(out.q_z.data), tr["q_z"])
    np.testing.assert_array_equal(latent_to_official(out.p_z.data), tr["p_z"])
    np.testing.assert_array_equal(latent_to_official(out.z.data), tr["sampled_z"])
    np.testing.assert_allclose(out.reconstruction.data, tr["x_recon"], rtol=1e-10, atol=1e-12)
    losses = model.loss(images, out)
    for ours, name in [(losses.loss, "loss"), (losses.reconstruction, "recon_loss"),
                       (losses.distance, "distance_loss")]:
        np.testing.assert_allclose(ours.item(), float(tr[name]), rtol=1e-10)
    losses.loss.backward()

    params = dict(model.named_parameters())
    checked = 0
    for name, p in params.items():
        g = p.grad[..., None] if p.ndim == 4 else p.grad      # back to the Conv3d layout
        scale = 1e-6 * max(np.abs(g).max(), 1e-30)
        if "grad." + name in tr:
            ref = tr["grad." + name]
            if name.endswith(".bias") and name.replace(".bias", ".bn.weight") in params:
                # bias before a training-mode tdBN: analytically zero, stored value is noise
                np.testing.assert_allclose(g, 0, atol=1e-9 * np.abs(params[name.replace(
                    ".bias", ".weight")].grad).max(), err_msg=name)
            else:
                np.testing.assert_allclose(g, ref, rtol=1e-5, atol=scale, err_msg=name)
        else:
            stride = int(tr["grad_stride." + name])
            np.testing.assert_allclose(g.reshape(-1)[::stride], tr["grad_sub." + name],
                                       rtol=1e-5, atol=scale, err_msg=name)
            w0 = initial[name]
            for key, value in [("grad_sum.", g.sum()), ("grad_sumsq.", (g ** 2).sum()),
                               ("grad_dotw.", (g * w0).sum())]:
                ref = float(tr[key + name])
                np.testing.assert_allclose(value, ref, rtol=1e-5,
                                           atol=1e-7 * float(np.sqrt(tr["grad_sumsq." + name])),
                                           err_msg=key + name)
        checked += 1
    assert checked == len(params) == 66

    buffers = dict(model.named_buffers())
    for key in tr.files:
        if not key.startswith("buf_after."):
            continue
        name = key[len("buf_after."):]
        if name.endswith("num_batches_tracked"):
            assert int(buffers[name]) == int(tr[key]), name
        else:
            np.testing.assert_allclose(buffers[name], tr[key], rtol=1e-10, atol=1e-12, err_msg=name)
    assert int(buffers["posterior.layers.0.bn.num_batches_tracked"]) == 6   # 5 prefix calls + 1
