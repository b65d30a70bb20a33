"""Operation counts checked by hand on tiny layers (linear, strided conv with padding,
transposed conv, dense first layers), cross-checked against the layer run with unit weights,
totals of a tiny FSVAE, and the energy arithmetic."""
from __future__ import annotations

import numpy as np
import pytest

from snnvae import F, Tensor
from snnvae import no_grad
from snnvae.metrics.operations import (ENERGY_PJ, count_dense_macs, count_operations,
                                      energy_estimate)
from snnvae.models import FSVAE, FSVAEConfig
from snnvae.nn import (Conv2d, LeakyReLU, Linear, Reshape, Sequential, SpikingConv2d,
                       SpikingConvTranspose2d, SpikingLinear, calibrate_running_statistics)

RNG = np.random.default_rng


def time_first(model, images, rng):
    """Images given as (N, T, ...) run through a time-first network as (T, N, ...)."""
    return model(Tensor(np.ascontiguousarray(np.swapaxes(images, 0, 1))))


def count(model, images):
    return count_operations(model, images, RNG(0), forward=time_first)


def test_spiking_linear_counts_each_spike_times_its_fan_out():
    net = Sequential(SpikingLinear(4, 3, bn=False, rng=RNG(0), dtype=np.float64))
    # image 0: 3 spikes over T = 2; image 1: 1 spike
    x = np.array([[[1, 0, 1, 0], [0, 0, 0, 1]],
                  [[0, 0, 0, 0], [0, 1, 0, 0]]], dtype=np.float64)       # (N, T, F_in)
    c = count(net, x)
    layer = c["layers"]["0"]
    assert layer["input"] == "spikes"
    assert layer["ac"] == (3 + 1) * 3 / 2          # spikes x F_out, per image
    assert layer["mac"] == 0
    assert layer["neuron_updates"] == 2 * 3        # T x F_out
    assert layer["input_spike_rate"] == 4 / 16
    assert c["total"]["ac"] == 6 and c["total"]["synaptic_ops"] == 6


def test_strided_padded_conv_edge_spikes_touch_fewer_weights():
    net = Sequential(SpikingConv2d(1, 2, 3, stride=2, padding=1, bn=False, rng=RNG(0),
                                   dtype=np.float64))
    x = np.zeros((1, 1, 1, 4, 4))                   # N, T, C, H, W; output 2 x 2
    # per axis, input index i is reached by f(i) = 1, 2, 1, 1 kernel positions
    # (outputs 0 and 1 read rows {-1, 0, 1} and {1, 2, 3}; row -1 is padding)
    for i, j in [(0, 0), (1, 1), (1, 3), (3, 3)]:
        x[0, 0, 0, i, j] = 1
    c = count(net, x)["layers"]["0"]
    assert c["ac"] == 2 * (1 * 1 + 2 * 2 + 2 * 1 + 1 * 1)   # C_out * f(i) f(j) summed = 16
    assert c["neuron_updates"] == 1 * 2 * 2 * 2
    # a constant fan-out of C_out * k * k per spike (counting inputs) would say 4 * 18 = 72


def test_transposed_conv_fan_out_is_cropped_by_the_padding():
    net = Sequential(SpikingConvTranspose2d(1, 2, 3, stride=2, padding=1, output_padding=1,
                                            bn=False, rng=RNG(0), dtype=np.float64))
    x = np.zeros((1, 1, 1, 2, 2))                   # output 4 x 4
    # input i lands on output rows 2i - 1 + q, q = 0..2: i = 0 -> {-1, 0, 1} (2 inside),
    # i = 1 -> {1, 2, 3} (3 inside)
    for i, j in [(0, 0), (1, 1), (0, 1)]:
        x[0, 0, 0, i, j] = 1
    c = count(net, x)["layers"]["0"]
    assert c["ac"] == 2 * (2 * 2 + 3 * 3 + 2 * 3)              # = 38
    assert c["neuron_updates"] == 2 * 4 * 4


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("size,stride,padding", [(5, 2, 1), (6, 2, 0), (4, 1, 1), (7, 3, 2)])
def test_conv_counts_equal_the_output_sum_with_unit_weights(transposed, size, stride, padding):
    """Independent check: with every weight 1 and no bias, the layer's outputs sum to exactly
    the number of (spike, weight) additions."""
    rng = RNG(3)
    c_in, c_out, k = 3, 2, 3
    x = (rng.random((2, 4, c_in, size, size)) < 0.3).astype(np.float64)    # N, T, C, H, W
    if transposed:
        net = Sequential(SpikingConvTranspose2d(c_in, c_out, k, stride=stride, padding=padding,
                                                output_padding=stride - 1, bn=False, rng=rng,
                                                dtype=np.float64))
        ones = np.ones((c_in, c_out, k, k))
        y = F.conv_transpose2d(Tensor(x), Tensor(ones), None, stride, padding, stride - 1)
    else:
        net = Sequential(SpikingConv2d(c_in, c_out, k, stride=stride, padding=padding, bn=False,
                                       rng=rng, dtype=np.float64))
        y = F.conv2d(Tensor(x), Tensor(np.ones((c_out, c_in, k, k))), None, stride, padding)
    c = count(net, x)["layers"]["0"]
    assert c["ac"] == pytest.approx(y.data.sum() / 2)
    naive = x.sum() / 2 * c_out * k * k        # every spike touching every weight of its channel
    assert 0 < c["ac"] <= naive
    if stride > 1 and not transposed:
        assert c["ac"] < naive / 2


def test_dense_first_layers_count_multiply_accumulates():
    rng = RNG(1)
    # the first encoder conv on a direct-coded image: real values at each of T = 3 steps
    net = Sequential(SpikingConv2d(1, 4, 3, stride=2, padding=1, bn=False, rng=rng,
                                   dtype=np.float64))
    x = np.repeat(rng.uniform(-1, 1, (1, 1, 1, 8, 8)), 3, axis=1)
    c = count(net, x)["layers"]["0"]
    # outputs 0..3 per axis read 2, 3, 3, 3 in-bounds rows: 11; MAC = T C_in C_out 11 * 11
    assert c["input"] == "real" and c["ac"] == 0
    assert c["mac"] == 3 * 1 * 4 * 11 * 11
    assert c["input_spike_rate"] is None
    # a linear on real values: every value times every output
    lin = Sequential(SpikingLinear(5, 3, bn=False, rng=rng, dtype=np.float64))
    c = count(lin, rng.normal(size=(1, 2, 5)))["layers"]["0"]
    assert c["mac"] == 2 * 5 * 3 and c["ac"] == 0


def test_a_network_without_neurons_gets_only_macs():
    rng = RNG(2)
    ann = Sequential(Conv2d(1, 2, 3, stride=2, padding=1, rng=rng, dtype=np.float64),
                     LeakyReLU(), Reshape(1, (2 * 2 * 2,)), Linear(8, 3, rng=rng, dtype=np.float64))
    x = (rng.random((2, 1, 4, 4)) < 0.5).astype(np.float64)     # 0/1 values, still an ANN
    c = count_operations(ann, x, RNG(0), forward=lambda m, images, r: m(Tensor(images)))
    assert not c["spiking"]
    assert c["total"]["ac"] == 0 and c["total"]["neuron_updates"] == 0
    assert c["layers"]["0"]["mac"] == 2 * 5 * 5       # C_out * (2 + 3) * (2 + 3), C_in 1
    assert c["layers"]["3"]["mac"] == 8 * 3
    assert c["total"]["mac"] == 50 + 24


TINY = FSVAEConfig(hidden_channels=(4, 8), input_size=8, latent_dim=6, k=3, timesteps=5)


@pytest.fixture(scope="module")
def tiny_fsvae():
    model = FSVAE(TINY, rng=RNG(0), dtype=np.float64)
    images = RNG(1).uniform(-1, 1, size=(6, 1, 8, 8))
    calibrate_running_statistics(model, lambda: model(images, rng=RNG(5)))
    return model, images


def test_tiny_fsvae_totals_are_the_sums_of_the_layers(tiny_fsvae):
    model, images = tiny_fsvae
    model.train()
    c = count_operations(model, images, RNG(4))
    assert model.training                                   # mode restored
    assert all("forward" not in m.__dict__ and "step" not in m.__dict__
               for _, m in model.named_modules())           # no wrapper left behind
    layers, T = c["layers"], TINY.timesteps
    for key in ("ac", "mac", "neuron_updates"):
        assert c["total"][key] == pytest.approx(sum(r[key] for r in layers.values()))
        assert c["total"][key] == pytest.approx(sum(g[key] for g in c["by_module"].values()))
    assert set(c["by_module"]) == {"encoder", "before_latent_layer", "posterior", "prior",
                                   "decoder_input", "decoder", "final_layer",
                                   "membrane_output_layer"}
    assert c["total"]["ac"] > 0 and c["images"] == 6
    # the first conv sees the image (real): MACs; T C_in C_out * (3 + 4 * 3)^2 ... see above
    first = layers["encoder.0"]
    assert first["input"] == "real" and first["ac"] == 0
    assert first["mac"] == T * 1 * 4 * (2 + 3 * 3) ** 2
    assert first["neuron_updates"] == T * 4 * 4 * 4
    for name, row in layers.items():
        if name not in ("encoder.0", "membrane_output_layer"):
            assert row["input"] == "spikes" and row["mac"] == 0, name
    assert layers["membrane_output_layer"]["mac"] == T * 1 * 8 * 8
    assert layers["final_layer.1"]["neuron_updates"] == 0      # no LIF on the last conv
    assert layers["posterior.layers.2"]["neuron_updates"] == T * TINY.k * TINY.latent_dim
    # without gradients the eval posterior steps through all T steps and runs no full pass
    post = layers["posterior.layers.0"]
    assert post["forward_calls"] == 0 and post["step_calls"] == T
    assert post["counted"] == "step"
    # spikes into the decoder input are the sampled z: rate x T x latent x fan-out
    dec = layers["decoder_input"]
    assert dec["ac"] == pytest.approx(dec["input_spike_rate"] * T * TINY.latent_dim
                                      * model.decoder_input.out_features)


def test_tiny_fsvae_generation_counts_the_stepped_prior(tiny_fsvae):
    model, images = tiny_fsvae
    c = count_operations(model, images[:4], RNG(4),
                         forward=lambda m, x, rng: m.sample(len(x), rng))
    T, layers = TINY.timesteps, c["layers"]
    assert "encoder.0" not in layers and "posterior.layers.0" not in layers
    prior = layers["prior.layers.0"]
    assert prior["counted"] == "step" and prior["step_calls"] == T
    assert prior["neuron_updates"] == T * 2 * TINY.latent_dim
    assert layers["prior.layers.2"]["neuron_updates"] == T * TINY.k * TINY.latent_dim
    assert layers["membrane_output_layer"]["mac"] == T * 64


def test_dense_macs_split_forward_backward_and_no_grad():
    rng = RNG(6)
    net = Sequential(SpikingConv2d(1, 4, 3, stride=2, padding=1, bn=False, rng=rng,
                                   dtype=np.float64))
    x = Tensor((rng.random((3, 2, 1, 8, 8)) < 0.2).astype(np.float64))   # spikes, counted dense
    m = count_dense_macs(net, lambda: net(x), batch_size=2)
    assert m["forward"] == 3 * 4 * 11 * 11 and m["forward_no_grad"] == 0
    assert m["backward"] == 2 * m["forward"] and m["total"] == 3 * m["forward"]
    with no_grad():
        m = count_dense_macs(net, lambda: net(x), batch_size=2)
    assert m["forward_no_grad"] == m["forward"] == 3 * 4 * 11 * 11 and m["backward"] == 0


def test_dense_macs_of_a_training_pass_include_the_posterior_prefix_loop(tiny_fsvae):
    model, images = tiny_fsvae
    model.train()
    m = count_dense_macs(model, lambda: model(images, rng=RNG(2), scheduled_p=0.0),
                         batch_size=len(images))
    C, k, T = TINY.latent_dim, TINY.k, TINY.timesteps
    per_step = 2 * C * 2 * C + 2 * C * 4 * C + 4 * C * k * C      # 2C -> 2C -> 4C -> kC
    # no-grad prefixes of lengths 1 .. T-1, then one full pass of T steps with gradient
    assert m["by_module"]["posterior"] == (T * (T - 1) // 2 + T) * per_step
    assert m["forward_no_grad"] == T * (T - 1) // 2 * per_step
    assert m["by_module"]["prior"] == T * (C * 2 * C + 2 * C * 4 * C + 4 * C * k * C)
    assert m["by_module"]["membrane_output_layer"] == T * 64
    assert m["forward"] == pytest.approx(sum(m["by_module"].values()))
    grad_part = m["forward"] - m["forward_no_grad"] - T * 64
    assert m["backward"] == pytest.approx(2 * grad_part + T * 64)


def test_energy_arithmetic_and_source():
    counts = {"total": {"ac": 10.0, "mac": 2.0, "neuron_updates": 5.0},
              "layers": {"a": {"ac": 10.0, "mac": 0.0, "neuron_updates": 5.0},
                         "b": {"ac": 0.0, "mac": 2.0, "neuron_updates": 0.0}}}
    e = energy_estimate(counts)
    assert ENERGY_PJ == {"ac": 0.9, "mac": 4.6}
    assert e["total_pj"] == pytest.approx(10 * 0.9 + 2 * 4.6)
    assert e["total_uj"] == pytest.approx(18.2e-6)
    assert e["layers"] == pytest.approx({"a": 9.0, "b": 9.2})
    assert "Horowitz" in e["source"] and "ISSCC 2014" in e["source"]
    assert e["energy_per_op_pj"] == {"ac": 0.9, "mac": 4.6, "neuron_update": 0.0}
    e = energy_estimate(counts, ac_pj=1.0, mac_pj=3.0, neuron_update_pj=0.5)
    assert e["total_pj"] == pytest.approx(10 + 6 + 2.5)
    assert e["parts"] == pytest.approx({"ac_pj": 10, "mac_pj": 6, "neuron_update_pj": 2.5})
    with pytest.raises(ValueError, match="ac_pj"):
        energy_estimate(counts, ac_pj=-1)
    with pytest.raises(ValueError, match="count_operations"):
        energy_estimate({"ac": 1})


def test_clear_errors():
    net = Sequential(SpikingLinear(2, 2, rng=RNG(0)))
    with pytest.raises(TypeError, match="Generator"):
        count_operations(net, np.zeros((1, 1, 2)), 0, forward=time_first)
    with pytest.raises(TypeError, match="reconstruct"):
        count_operations(net, np.zeros((1, 1, 2)), RNG(0))
    with pytest.raises(ValueError, match="at least one image"):
        count_operations(net, np.zeros((0, 1, 2)), RNG(0), forward=time_first)
