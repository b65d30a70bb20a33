"""Optimiser updates against values computed by hand from the update equations."""
from __future__ import annotations

import math

import numpy as np
import pytest

from snnvae import nn, optim


def param(values):
    return nn.Parameter(np.array(values, dtype=np.float64))


def test_sgd_plain_and_momentum():
    p = param([1.0, -2.0])
    opt = optim.SGD([p], lr=0.1)
    p.grad = np.array([0.5, 1.0])
    opt.step()
    np.testing.assert_allclose(p.data, [0.95, -2.1])

    p = param([1.0])
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = np.array([1.0])
    opt.step()                       # buf = 1 -> p = 0.9
    p.grad = np.array([2.0])
    opt.step()                       # buf = 0.9 + 2 = 2.9 -> p = 0.9 - 0.29 = 0.61
    np.testing.assert_allclose(p.data, [0.61])


def test_adam_first_steps_by_hand():
    p = param([1.0])
    opt = optim.Adam([p], lr=0.01)
    p.grad = np.array([0.5])
    opt.step()
    # step 1: m = 0.05, v = 0.00025; m_hat = 0.5, v_hat = 0.25 -> p = 1 - 0.01 * 0.5/(0.5 + 1e-8)
    np.testing.assert_allclose(p.data, [1 - 0.01 * 0.5 / (0.5 + 1e-8)], rtol=1e-14)
    p.grad = np.array([-1.0])
    opt.step()
    m = 0.9 * 0.05 + 0.1 * -1.0
    v = 0.999 * 0.00025 + 0.001 * 1.0
    step = 0.01 / (1 - 0.9 ** 2) * m / (math.sqrt(v) / math.sqrt(1 - 0.999 ** 2) + 1e-8)
    state = opt.state[0][0]
    np.testing.assert_allclose(state["exp_avg"], [m], rtol=1e-14)
    np.testing.assert_allclose(state["exp_avg_sq"], [v], rtol=1e-14)
    assert state["step"] == 2
    np.testing.assert_allclose(p.data, [1 - 0.01 * 0.5 / (0.5 + 1e-8) - step], rtol=1e-14)


def test_adam_l2_vs_adamw_decoupled_decay():
    g = np.array([0.3])
    a, w = param([2.0]), param([2.0])
    adam = optim.Adam([a], lr=0.1, weight_decay=0.5)
    adamw = optim.AdamW([w], lr=0.1, weight_decay=0.5)
    a.grad, w.grad = g.copy(), g.copy()
    adam.step()
    adamw.step()
    # Adam: g' = 0.3 + 0.5 * 2 = 1.3; first step moves by lr * sign ~ 0.1
    np.testing.assert_allclose(a.data, [2.0 - 0.1 * 1.3 / (1.3 + 1e-8)], rtol=1e-14)
    # AdamW: p <- 2 (1 - 0.05) = 1.9, then the Adam step on g = 0.3
    np.testing.assert_allclose(w.data, [1.9 - 0.1 * 0.3 / (0.3 + 1e-8)], rtol=1e-14)


def test_param_groups_and_state_dict_round_trip():
    p1, p2 = param([1.0, 2.0]), param([3.0])
    opt = optim.AdamW([{"params": [p1]}, {"params": [p2], "lr": 0.01}], lr=0.001)
    assert opt.param_groups[1]["lr"] == 0.01 and opt.param_groups[0]["lr"] == 0.001
    for _ in range(3):
        p1.grad, p2.grad = np.array([0.1, -0.2]), np.array([0.5])
        opt.step()
    saved = opt.state_dict()
    q1, q2 = param(p1.data), param(p2.data)
    twin = optim.AdamW([{"params": [q1]}, {"params": [q2], "lr": 0.5}], lr=0.5).load_state_dict(saved)
    for o, (a, b) in ((opt, (p1, p2)), (twin, (q1, q2))):
        a.grad, b.grad = np.array([0.1, -0.2]), np.array([0.5])
        o.step()
    np.testing.assert_array_equal(p1.data, q1.data)
    np.testing.assert_array_equal(p2.data, q2.data)


def test_optimizer_errors():
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="unknown options"):
        optim.SGD([param([1.0])], lr=0.1, betas=(0.9, 0.99))
    opt = optim.AdamW([param([1.0, 2.0])])
    two = optim.AdamW([param([1.0, 2.0]), param([3.0])])
    p0, p1 = two.param_groups[0]["params"]
    p0.grad, p1.grad = np.ones(2), np.ones(1)
    two.step()
    with pytest.raises(ValueError, match="does not fit"):
        opt.load_state_dict(two.state_dict())
    bad = {"g0.p0.exp_avg": np.zeros(3), "g0.p0.exp_avg_sq": np.zeros(3), "g0.p0.step": np.array(1.0)}
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(bad)


def test_sgd_weight_decay_nesterov_and_dtype():
    p = nn.Parameter(np.array([1.0], np.float32))
    opt = optim.SGD([p], lr=0.1, momentum=0.5, weight_decay=0.2, nesterov=True)
    p.grad = np.array([1.0], np.float32)
    opt.step()
    # g = 1 + 0.2 * 1 = 1.2; buf = 1.2; nesterov d = g + 0.5 buf = 1.8; p = 1 - 0.18
    np.testing.assert_allclose(p.data, [0.82], rtol=1e-6)
    assert p.dtype == np.float32
