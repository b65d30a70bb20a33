"""Optimisers with PyTorch's update equations, parameter groups and saveable state.

For parameter p with gradient g at step t (1-based), learning rate lr:

SGD (momentum mu, dampening 0, optional weight decay wd, optional Nesterov):
    g <- g + wd p;  b <- g (t = 1) or mu b + g;  d = g + mu b (Nesterov) or b;  p <- p - lr d
Adam (L2 weight decay added to the gradient):
    g <- g + wd p;  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
AdamW (decoupled weight decay, Loshchilov & Hutter):
    p <- p (1 - lr wd), then the Adam step without wd in g.
"""
from __future__ import annotations


import numpy as np

from . import backend
from .autograd import no_grad
from .device import contiguous, device_of, place_like, to_host


class Optimizer:
    defaults: dict = {}

    def __init__(self, params, **hyper):
        unknown = set(hyper) - set(self.defaults)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown options {sorted(unknown)}; "
                            f"it takes {sorted(self.defaults)}")
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        for group in groups:
            full = {**self.defaults, **hyper, **group}
            full["params"] = list(group["params"])
            if full["lr"] < 0:
                raise ValueError(f"learning rate must be >= 0, got {full['lr']}")
            self.param_groups.append(full)
        self.state = [[{} for _ in g["params"]] for g in self.param_groups]

    def zero_grad(self):
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def step(self):
        with no_grad():
            for group, states in zip(self.param_groups, self.state):
                for p, state in zip(group["params"], states):
                    if p.grad is not None:
                        self._update(p, p.grad, state, group)

    def _update(self, p, g, state, group):
        raise NotImplementedError

    def state_dict(self):
        """Flat name -> array mapping (npz-friendly): 'g{i}.p{j}.{key}' and 'g{i}.{hyper}'."""
        out = {}
        for i, (group, states) in enumerate(zip(self.param_groups, self.state)):
            for key, value in group.items():
                if key != "params":
                    out[f"g{i}.{key}"] = np.asarray(value, dtype=np.float64)
            for j, state in enumerate(states):
                for key, value in state.items():
                    out[f"g{i}.p{j}.{key}"] = np.asarray(to_host(value))
        return out

    def load_state_dict(self, flat):
        """Restore ``state_dict()`` output; the groups and parameters must be the same."""
        expected = {f"g{i}.p{j}" for i, g in enumerate(self.param_groups)
                    for j in range(len(g["params"]))}
        saved = {k.rsplit(".", 1)[0] for k in flat if ".p" in k}
        if saved and saved != expected:
            raise ValueError(f"optimiser state does not fit: it holds state for "
                             f"{len(saved)} parameters, this optimiser has {len(expected)} "
                             f"(missing {sorted(expected - saved)[:5]}, unexpected "
                             f"{sorted(saved - expected)[:5]})")
        for i, (group, states) in enumerate(zip(self.param_groups, self.state)):
            for key in group:
                if key != "params" and f"g{i}.{key}" in flat:
                    value = np.asarray(flat[f"g{i}.{key}"])
                    group[key] = tuple(value.tolist()) if value.ndim else float(value)
            for j, p in enumerate(group["params"]):
                prefix = f"g{i}.p{j}."
                state = {k[len(prefix):]: np.array(v) for k, v in flat.items() if k.startswith(prefix)}
                for key, value in state.items():
                    if key != "step" and value.shape != p.shape:
                        raise ValueError(f"optimiser state {prefix}{key} has shape {value.shape} "
                                         f"but parameter {j} of group {i} has shape {p.shape}")
                # moments go where the parameter lives (a host checkpoint onto a GPU model)
                states[j] = {k: (float(v) if k == "step" else place_like(v, p.data))
                             for k, v in state.items()}
        return self


class SGD(Optimizer):
    defaults = dict(lr=0.01, momentum=0.0, weight_decay=0.0, nesterov=False)

    def _update(self, p, g, state, group):
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p.data
        mu = group["momentum"]
        if mu:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = g.copy()
            else:
                state["momentum_buffer"] = mu * state["momentum_buffer"] + g
            buf = state["momentum_buffer"]
            g = g + mu * buf if group["nesterov"] else buf
        p.data = (p.data - group["lr"] * g).astype(p.dtype, copy=False)


class Adam(Optimizer):
    defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    decoupled = False

    def _update(self, p, g, state, group):
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if not (p.data.flags.c_contiguous and p.data.flags.writeable):
            p.data = np.array(p.data, order="C")            # the update works in place
        if not state:
            state["step"] = 0.0
            state["exp_avg"] = np.zeros_like(p.data)
            state["exp_avg_sq"] = np.zeros_like(p.data)
        for key in ("exp_avg", "exp_avg_sq"):
            value = state[key]      # loaded in another dtype, or left behind by a moved model
            if (value.dtype != p.dtype or device_of(value) != device_of(p.data)
                    or not value.flags.c_contiguous):
                state[key] = contiguous(place_like(value, p.data).astype(p.dtype, copy=False))
        state["step"] += 1
        backend.kernels().adam_update(p.data, g, state["exp_avg"], state["exp_avg_sq"], lr, b1,
                                      b2, eps, wd, self.decoupled, state["step"])


class AdamW(Adam):
    defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)
    decoupled = True
