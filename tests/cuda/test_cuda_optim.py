"""The CUDA Adam(W) update against the Numba CPU one, over several steps, in place."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_matches

from snnvae.kernels import cpu
from snnvae.kernels.cuda import launch, optim


STEPS = 3
SHAPE = (5, 13)               # 65 elements: more than the simulator's 32 threads
HYPER = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8)
DECAY = {"no_decay": (0.0, False), "l2": (1e-2, False), "decoupled": (1e-2, True)}


def _state(rng, dtype):
    p = rng.normal(size=SHAPE).astype(dtype)
    return p, np.zeros_like(p), np.zeros_like(p)


def _grads(rng, dtype):
    return [rng.normal(size=SHAPE).astype(dtype) for _ in range(STEPS)]


@pytest.mark.parametrize("decay", DECAY, ids=list(DECAY))
def test_adam_on_host_arrays_updates_them_in_place(rng, dtype, decay):
    weight_decay, decoupled = DECAY[decay]
    p, m, v = _state(rng, dtype)
    p_cpu, m_cpu, v_cpu = p.copy(), m.copy(), v.copy()
    for step, g in enumerate(_grads(rng, dtype), start=1):
        optim.adam_update(p, g, m, v, weight_decay=weight_decay, decoupled=decoupled,
                          step=step, **HYPER)
        cpu.adam_update(p_cpu, g, m_cpu, v_cpu, weight_decay=weight_decay, decoupled=decoupled,
                        step=step, **HYPER)
        assert_matches(p, p_cpu, what=f"p after step {step}")
        assert_matches(m, m_cpu, what=f"exp_avg after step {step}")
        assert_matches(v, v_cpu, what=f"exp_avg_sq after step {step}")


def test_adam_on_device_arrays_updates_them_on_the_device(rng, dtype):
    p, m, v = _state(rng, dtype)
    p_cpu, m_cpu, v_cpu = p.copy(), m.copy(), v.copy()
    p_d, m_d, v_d = (launch.to_device(a) for a in (p, m, v))
    for step, g in enumerate(_grads(rng, dtype), start=1):
        optim.adam_update(p_d, launch.to_device(g), m_d, v_d, weight_decay=1e-2,
                          decoupled=True, step=step, **HYPER)
        cpu.adam_update(p_cpu, g, m_cpu, v_cpu, weight_decay=1e-2, decoupled=True, step=step,
                        **HYPER)
    assert_matches(p_d.copy_to_host(), p_cpu, what="p")
    assert_matches(m_d.copy_to_host(), m_cpu, what="exp_avg")
    assert_matches(v_d.copy_to_host(), v_cpu, what="exp_avg_sq")
    assert not np.array_equal(p, p_cpu), "the host copy was not touched: the device one was"


def test_adam_refuses_a_non_contiguous_host_parameter(rng):
    p = np.zeros((6, 4)).T
    with pytest.raises(ValueError, match="contiguous"):
        optim.adam_update(p, np.ones_like(p), np.zeros_like(p), np.zeros_like(p),
                          weight_decay=0.0, decoupled=False, step=1, **HYPER)
