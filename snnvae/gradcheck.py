"""Gradient checking by central finite differences, for tests and lessons.

    numerical dL/dx_i = (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)      (float64, eps ~ 1e-6)

compared with the analytic gradient from ``backward()``. Spikes are steps with no useful
finite difference, so checks through spiking layers run in the smooth stand-in mode
(``spike_mode("smooth")``), whose exact derivative is the surrogate; ``check_spiking_backward``
then checks that the real spiking backward equals the stand-in's derivative at the spiking
forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .autograd import Tensor, no_grad
from .functional.lif import spike_mode


@dataclass
class GradCheckResult:
    name: str
    max_abs_error: float
    max_rel_error: float
    checked: int
    passed: bool

    def __str__(self):
        flag = "ok " if self.passed else "FAIL"
        return (f"[{flag}] {self.name}: {self.checked} entries, max abs err "
                f"{self.max_abs_error:.2e}, max rel err {self.max_rel_error:.2e}")


def _scalar(fn):
    out = fn()
    return float(out.data.sum() if isinstance(out, Tensor) else np.sum(out))


def numerical_grad(fn, tensor: Tensor, indices, eps=1e-6):
    """Central differences of the scalar fn() w.r.t. tensor.data at the flat ``indices``."""
    if not tensor.data.flags.c_contiguous:
        tensor.data = np.ascontiguousarray(tensor.data)   # so that the flat view below aliases it
    flat = tensor.data.reshape(-1)
    grads = np.empty(len(indices))
    with no_grad():
        for k, i in enumerate(indices):
            saved = flat[i]
            flat[i] = saved + eps
            plus = _scalar(fn)
            flat[i] = saved - eps
            minus = _scalar(fn)
            flat[i] = saved
            grads[k] = (plus - minus) / (2 * eps)
    return grads


def grad_check(fn, inputs, names=None, eps=1e-6, atol=1e-6, rtol=1e-4, samples=None,
               rng=None, spike="smooth"):
    """Compare backward() of the scalar ``fn()`` with central differences for each input.

    fn: callable with no arguments returning a Tensor (summed to a scalar if not one).
    inputs: float64 Tensors with requires_grad (module parameters work too).
    samples: check this many random entries per input (all entries if None); needs ``rng``.
    spike: spike mode to run in ('smooth' by default; 'spike' for networks without LIF).
    Returns a list of GradCheckResult, one per input; ``all(r.passed for r in results)``.
    An entry passes when |analytic - numeric| <= atol + rtol * |numeric|.
    """
    for t in inputs:
        if t.dtype != np.float64:
            raise TypeError(f"grad_check needs float64 inputs (rounding noise of float32 swamps "
                            f"finite differences); got {t.dtype}")
    names = names or [f"input{i}" for i in range(len(inputs))]
    with spike_mode(spike):
        for t in inputs:
            t.grad = None
        out = fn()
        loss = out if out.size == 1 else out.sum()
        loss.backward()
        results = []
        for name, t in zip(names, inputs):
            analytic = np.zeros(t.size) if t.grad is None else t.grad.reshape(-1)
            if samples is None or samples >= t.size:
                idx = np.arange(t.size)
            else:
                if rng is None:
                    raise ValueError("grad_check with samples= needs rng=np.random.Generator")
                idx = rng.choice(t.size, size=samples, replace=False)
            numeric = numerical_grad(fn, t, idx, eps)
            err = np.abs(analytic[idx] - numeric)
            rel = err / np.maximum(np.abs(numeric), 1e-12)
            passed = bool(np.all(err <= atol + rtol * np.abs(numeric)))
            results.append(GradCheckResult(name, float(err.max(initial=0)),
                                           float(rel.max(initial=0)), len(idx), passed))
    return results


def check_spiking_backward(fn, inputs, names=None, rtol=1e-9, atol=1e-12):
    """Spiking-mode gradients == straight-through gradients (autograd of the stand-in at the
    spiking forward pass). Returns a list of GradCheckResult."""
    names = names or [f"input{i}" for i in range(len(inputs))]
    grads = {}
    for mode in ("spike", "straight_through"):
        with spike_mode(mode):
            for t in inputs:
                t.grad = None
            out = fn()
            (out if out.size == 1 else out.sum()).backward()
            grads[mode] = [np.zeros(t.shape) if t.grad is None else t.grad.copy() for t in inputs]
    results = []
    for name, a, b in zip(names, grads["spike"], grads["straight_through"]):
        err = np.abs(a - b)
        rel = err / np.maximum(np.abs(b), 1e-12)
        passed = bool(np.all(err <= atol + rtol * np.abs(b)))
        results.append(GradCheckResult(name, float(err.max(initial=0)), float(rel.max(initial=0)),
                                       a.size, passed))
    return results
