"""Modules: registration, state dicts with checks, modes, initialisation, clear errors."""
from __future__ import annotations

import numpy as np
import pytest

from snnvae import F, Tensor, nn


def small_net(seed=0):
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.SpikingConv2d(1, 4, 3, stride=2, padding=1, rng=rng),
                         nn.Reshape(2, (4 * 4 * 4,)),
                         nn.SpikingLinear(64, 5, alpha=2.0, rng=rng))


def test_named_parameters_and_buffers_follow_official_names():
    net = small_net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["0.weight", "0.bias", "0.bn.weight", "0.bn.bias",
                     "2.weight", "2.bias", "2.bn.weight", "2.bn.bias"]
    buffers = [n for n, _ in net.named_buffers()]
    assert "0.bn.running_mean" in buffers and "2.bn.num_batches_tracked" in buffers
    assert net.num_parameters() == 4 * 9 + 4 + 8 + 64 * 5 + 5 + 10


def test_state_dict_round_trip_and_running_stats():
    net, twin = small_net(0), small_net(1)
    x = Tensor(np.random.default_rng(2).normal(size=(3, 2, 1, 8, 8)).astype(np.float32))
    net(x)                                   # training call moves the running statistics
    assert int(net[0].bn.num_batches_tracked) == 1
    twin.load_state_dict(net.state_dict())
    net.eval(), twin.eval()
    np.testing.assert_array_equal(net(x).data, twin(x).data)
    assert not net.training and not net[0].bn.training


def test_load_state_dict_reports_missing_unexpected_and_shapes():
    net = small_net()
    state = net.state_dict()
    state.pop("0.bias")
    state["extra"] = np.zeros(1)
    with pytest.raises(KeyError, match=r"missing \['0.bias'\].*unexpected \['extra'\]"):
        net.load_state_dict(state)
    state = net.state_dict()
    state["2.weight"] = np.zeros((6, 64))
    with pytest.raises(ValueError, match=r"2.weight: checkpoint \(6, 64\) vs model \(5, 64\)"):
        net.load_state_dict(state)


def test_initialisation_bounds_match_pytorch_defaults():
    rng = np.random.default_rng(0)
    conv = nn.Conv2d(16, 8, 3, rng=rng)
    bound = 1 / np.sqrt(16 * 9)               # kaiming-uniform(a = sqrt 5) = 1/sqrt(fan_in)
    assert np.abs(conv.weight.data).max() <= bound
    assert np.abs(conv.weight.data).max() > 0.95 * bound      # uniform fills the range
    assert np.abs(conv.bias.data).max() <= bound
    ct = nn.ConvTranspose2d(16, 8, 3, rng=rng)  # fan_in from weight axis 1 = C_out = 8
    bound_t = 1 / np.sqrt(8 * 9)
    assert bound < np.abs(ct.weight.data).max() <= bound_t
    lin = nn.Linear(100, 10, rng=rng)
    assert np.abs(lin.weight.data).max() <= 0.1 and lin.weight.dtype == np.float32


def test_seeded_construction_is_reproducible():
    a, b = small_net(7), small_net(7)
    for (n1, p1), (_, p2) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p1.data, p2.data, err_msg=n1)


def test_to_float64_casts_parameters_and_buffers():
    net = small_net().to(np.float64)
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert net[0].bn.running_var.dtype == np.float64


def test_clear_errors_for_bad_input():
    net = small_net()
    with pytest.raises(TypeError, match="rng=np.random.Generator"):
        nn.Linear(3, 2, rng=None)
    with pytest.raises(ValueError, match="input has 3 channels"):
        net[0](Tensor(np.zeros((2, 1, 3, 8, 8), np.float32)))
    with pytest.raises(ValueError, match=r"must have 4 or 5 axes"):
        net[0](Tensor(np.zeros((8, 8), np.float32)))
    with pytest.raises(TypeError, match="share one dtype"):
        net[0](Tensor(np.zeros((2, 1, 1, 8, 8), np.float64)))
    with pytest.raises(TypeError, match="float32 or float64"):
        F.lif(Tensor(np.zeros((2, 3), np.int32)))
    with pytest.raises(ValueError, match="features"):
        F.linear(Tensor(np.zeros((2, 3))), Tensor(np.zeros((4, 5))))
    with pytest.raises(ValueError, match="output_padding must be smaller than stride"):
        F.conv_transpose2d(Tensor(np.zeros((1, 1, 2, 2))), Tensor(np.zeros((1, 1, 3, 3))),
                           stride=1, output_padding=1)
    with pytest.raises(ValueError, match="unknown spike mode"):
        F.lif(Tensor(np.zeros((2, 3))), mode="soft")
    with pytest.raises(ValueError, match="same shape"):
        F.mse_loss(Tensor(np.zeros(3)), Tensor(np.zeros(4)))
