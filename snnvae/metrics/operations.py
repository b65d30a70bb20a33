"""Operation counts of one eval-mode pass, and the usual energy estimate of SNN papers.

Three kinds of work are counted, per image (the batch total divided by the batch size):

* **AC** (accumulate): a weighted layer whose input is spikes (every value 0 or 1) needs no
  multiplication: each input spike adds the weights it touches to their outputs. We count, for
  every input spike, its fan-out: the number of weight entries it touches, i.e. the number of
  (weight entry, output) pairs it reaches.

      linear (F_in -> F_out):     fan-out = F_out
      conv (stride s, pad p):     fan-out of input (c, i, j) = C_out * f_H(i) * f_W(j),
                                  f(i) = #{q in [0, k): (i + p - q) / s is an integer in [0, H_out)}
      transposed conv:            fan-out of input (c, i, j) = C_out * g_H(i) * g_W(j),
                                  g(i) = #{q in [0, k): 0 <= i s - p + q < H_out}

  So AC = sum over spikes of their fan-out = C_out * sum_ij n[i, j] f(i) f(j), n[i, j] the
  number of spikes at (i, j) over time, batch and input channels. Equivalently, AC = the sum of
  the layer's output with every weight set to 1 and no bias (the tests check both). A spike at
  the border touches fewer weights (the kernel hangs over the zero padding), and with stride 2 an
  input pixel is reached by only about k/2 kernel rows, not k.
* **MAC** (multiply-accumulate): a weighted layer whose input is real-valued: the first
  encoder conv on the direct-coded image (counted at each of the T steps, as the official
  code computes it; snnvae convolves the repeated image once and repeats the result, see
  ``functional.conv``), ANN layers, and the membrane-output readout (sum_t decay^(T-1-t) x_t:
  T multiply-adds per output value). Dense: every input value counts, zeros included, with the
  same fan-out as above (products with the zero padding are not counted).
* **Neuron updates**: LIF state updates, neurons x T (the number of values an LIF layer sees).

A model without LIF neurons (the ANN VAE) gets MACs only, whatever values its layers see.

What the counts leave out: bias additions, tdBN / BatchNorm (in eval mode an affine map that
folds into the preceding weights), LeakyReLU / tanh, the one-of-k picks and any op called
outside the layer classes of ``snnvae.nn`` (Linear, Conv2d, ConvTranspose2d and their spiking
blocks, LIF, MembraneOutput).

How this differs from the official count. shared/REFERENCE.md describes the official count as
"an accumulate per (input spike x fan-out)", i.e. counted on the input side. With one fan-out per
layer (that of an interior pixel, C_out k^2 for a conv) such a count is exact for a linear layer
and for interior pixels of a stride-1 conv, but it overcounts border pixels, which touch fewer
weights, and strided convs, where an input is reached by only about k/s kernel positions per
axis (about 4x too many for a 3x3 stride-2 conv). Here every input spike gets its own fan-out,
so the total equals the count from the outputs' side: for every output, the spikes in its
receptive field times C_out, padding excluded.

Calls counted. Only full-sequence ``forward`` calls of a layer are counted, plus its one-step
``step`` calls (the O(T) eval-mode stepping of the latent networks) when the layer ran no full
pass: FSVAE's eval posterior without gradients steps through all T steps and runs no full pass
(with gradients it steps through t < T-1 to sample z and then runs once over all T steps,
recomputing exactly the same spikes, so a causal network does that work once). With
``forward=lambda m, x, rng: m.sample(len(x), rng)`` the prior's stepped generation is counted.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Tensor, is_grad_enabled, no_grad
from ..device import to_host
from ..nn import LIF, Conv2d, ConvTranspose2d, Linear, MembraneOutput

# Energy per operation, 45 nm CMOS (Horowitz, "Computing's energy problem (and what we can do
# about it)", ISSCC 2014): 32-bit float add 0.9 pJ, 32-bit float multiply 3.7 pJ; a MAC is one
# of each (4.6 pJ). The figures most SNN papers use for such estimates.
ENERGY_PJ = {"ac": 0.9, "mac": 4.6}
ENERGY_SOURCE = ("Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC "
                 "2014: 45 nm CMOS, 32-bit float add 0.9 pJ (one AC), add + multiply 0.9 + 3.7 "
                 "= 4.6 pJ (one MAC)")

_WEIGHTED = (Linear, Conv2d, ConvTranspose2d)
_COUNTS = ("ac", "mac", "neuron_updates")


def _pair(v):
    return (v, v) if np.isscalar(v) else tuple(v)


def _conv_reach(size, k, stride, pad):
    """f(i), i < size: how many kernel positions q of a conv reach input index i."""
    out = (size + 2 * pad - k) // stride + 1
    num = np.arange(size)[:, None] + pad - np.arange(k)[None, :]      # = o * stride for a hit
    hit = (num >= 0) & (num % stride == 0) & (num // stride < out)
    return hit.sum(axis=1)


def _conv_transpose_reach(size, k, stride, pad, output_padding):
    """g(i), i < size: how many kernel positions q of a transposed conv land inside the output."""
    out = (size - 1) * stride - 2 * pad + k + output_padding
    pos = np.arange(size)[:, None] * stride - pad + np.arange(k)[None, :]
    return ((pos >= 0) & (pos < out)).sum(axis=1)


def _is_spikes(x):
    return bool(np.all((x == 0) | (x == 1)))


def _synaptic_ops(layer, x, dense):
    """Additions (spike input) or multiply-adds (dense) of one call of a weighted layer on x."""
    active = None if dense else (x != 0)
    if isinstance(layer, Linear):
        n_in = x.size if dense else int(np.count_nonzero(active))
        return n_in * layer.out_features
    H, W = x.shape[-2:]
    kh, kw = layer.weight.shape[-2:]
    (sh, sw), (ph, pw) = _pair(layer.stride), _pair(layer.padding)
    if isinstance(layer, ConvTranspose2d):
        oph, opw = _pair(layer.output_padding)
        c_out = layer.weight.shape[1]
        fh = _conv_transpose_reach(H, kh, sh, ph, oph)
        fw = _conv_transpose_reach(W, kw, sw, pw, opw)
    else:
        c_out = layer.weight.shape[0]
        fh, fw = _conv_reach(H, kh, sh, ph), _conv_reach(W, kw, sw, pw)
    if dense:
        per_pixel = np.full((H, W), x.size // (H * W), dtype=np.int64)
    else:
        per_pixel = active.reshape(-1, H, W).sum(axis=0, dtype=np.int64)
    return int(c_out * (fh.astype(np.int64) @ per_pixel @ fw.astype(np.int64)))


class _Tally:
    """Per-layer sums, kept apart for full passes ('forward') and one-step calls ('step')."""

    def __init__(self, kind):
        self.kind = kind
        self.sums = {"forward": dict.fromkeys(_COUNTS, 0), "step": dict.fromkeys(_COUNTS, 0)}
        self.calls = {"forward": 0, "step": 0}
        self.inputs = set()             # "spikes" / "real"
        self.spikes, self.values = 0, 0  # input spikes and input values (spiking inputs)

    def add(self, how, **counts):
        for key, value in counts.items():
            self.sums[how][key] += value

    def result(self, scale):
        how = "forward" if self.calls["forward"] else "step"
        row = {key: self.sums[how][key] * scale for key in _COUNTS}
        row.update(kind=self.kind, input="/".join(sorted(self.inputs)) or None,
                   input_spike_rate=self.spikes / self.values if self.values else None,
                   forward_calls=self.calls["forward"], step_calls=self.calls["step"],
                   counted="forward" if self.calls["forward"] else "step")
        return row


def _array(x):
    """The values as a host array (a copy from the GPU for a model there: counting reads them)."""
    return np.asarray(to_host(x.data if isinstance(x, Tensor) else x))


class _Patches:
    """Instance-level replacements of module methods (``forward``, ``step``), undone in order.
    Module.__call__ looks ``forward`` up on the instance, so the layers' code stays untouched."""

    def __init__(self):
        self.done = []

    def set(self, module, attr, wrapper):
        self.done.append((module, attr, module.__dict__.get(attr)))
        object.__setattr__(module, attr, wrapper)

    def undo(self):
        for module, attr, previous in reversed(self.done):
            if previous is None:
                del module.__dict__[attr]
            else:
                object.__setattr__(module, attr, previous)
        self.done = []


def _named(model):
    return {name.rstrip("."): m for name, m in model.named_modules()}


def _instrument(model, spiking_model):
    """Wrap forward (and step) of every counted module; returns (tallies, patches)."""
    modules = _named(model)
    weighted = {n for n, m in modules.items() if isinstance(m, _WEIGHTED)}
    tallies, patches = {}, _Patches()

    def in_block(name):
        # an LIF inside a spiking block is counted by the block (e.g. encoder.0), not patched
        return name.rpartition(".")[0] in weighted

    def weighted_op(tally, layer, x, how):
        x = _array(x)
        dense = not spiking_model or not _is_spikes(x)
        ops = _synaptic_ops(layer, x, dense)
        tally.add(how, **({"mac": ops} if dense else {"ac": ops}))
        tally.inputs.add("real" if dense else "spikes")
        if not dense:
            tally.spikes += int(np.count_nonzero(x))
            tally.values += x.size

    for name, m in modules.items():
        if isinstance(m, _WEIGHTED):
            tally = tallies.setdefault(name, _Tally(type(m).__name__))

            def forward(x, *a, _m=m, _t=tally, _f=m.forward, **kw):
                _t.calls["forward"] += 1
                weighted_op(_t, _m, x, "forward")
                out = _f(x, *a, **kw)
                # the block's LIF is counted here: the fused tdBN/LIF path never calls it
                if getattr(_m, "spike", None) is not None:
                    _t.add("forward", neuron_updates=_array(out).size)
                return out
            patches.set(m, "forward", forward)
            if hasattr(m, "step"):
                def step(x_t, state=None, _m=m, _t=tally, _f=m.step):
                    _t.calls["step"] += 1
                    weighted_op(_t, _m, x_t, "step")
                    out, new_state = _f(x_t, state)
                    if getattr(_m, "spike", None) is not None:   # the block's LIF, one step
                        _t.add("step", neuron_updates=np.size(out))
                    return out, new_state
                patches.set(m, "step", step)
        elif isinstance(m, (LIF, MembraneOutput)) and not in_block(name):
            tally = tallies.setdefault(name, _Tally(type(m).__name__))
            count = "neuron_updates" if isinstance(m, LIF) else "mac"

            def forward(x, *a, _t=tally, _f=m.forward, _c=count, **kw):
                _t.calls["forward"] += 1
                if _c == "mac":
                    _t.inputs.add("real")
                _t.add("forward", **{_c: _array(x).size})
                return _f(x, *a, **kw)
            patches.set(m, "forward", forward)
    return tallies, patches


def _eval_forward(model, images, rng):
    """The default pass of a VAE (a model with ``reconstruct``): its whole forward, as its
    evaluation runs it and the official code counts it; for FSVAE that includes the prior, which
    the loss needs and ``reconstruct`` alone skips."""
    if not hasattr(model, "reconstruct"):
        raise TypeError(f"{type(model).__name__} is not a VAE with reconstruct(images, rng); pass "
                        f"forward=lambda model, images, rng: ... to count_operations")
    return model(images, rng=rng)


def count_operations(model, images, rng: np.random.Generator, forward=None) -> dict:
    """Count AC, MAC and neuron updates of one eval-mode, no-gradient pass of ``model``.

    model:   a Module built from ``snnvae.nn`` layers (FSVAE, ESVAE, ANN VAE, any Sequential).
    images:  a batch (N, ...) the pass runs on; counts are divided by N (per image).
    rng:     numpy Generator for the model's random draws (FSVAE's one-of-k picks).
    forward: callable (model, images, rng) making the pass; default the VAE's whole forward
             ``model(images, rng=rng)`` (FSVAE's prior included, as the official code counts
             it). ``lambda m, x, r: m.reconstruct(x, r)`` counts reconstruction alone,
             ``lambda m, x, r: m.sample(len(x), r)`` generation.

    Returns a dict (JSON-ready; counts per image, floats):
        layers:    name -> {kind, input ('spikes' / 'real'), ac, mac, neuron_updates,
                            input_spike_rate, forward_calls, step_calls, counted}
        by_module: top-level child name (encoder, posterior, ...) -> {ac, mac, neuron_updates}
        total:     {ac, mac, neuron_updates, synaptic_ops (= ac + mac)}
        images, model, per ('image'), notes.
    The model's training flag is restored afterwards.
    """
    images = _array(images)
    if images.ndim < 1 or images.shape[0] < 1:
        raise ValueError(f"count_operations needs a batch of at least one image, got shape "
                         f"{images.shape}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    forward = forward or _eval_forward
    spiking_model = any(isinstance(m, LIF) for _, m in model.named_modules())
    was_training = model.training
    tallies, patches = _instrument(model, spiking_model)
    model.eval()
    try:
        with no_grad():
            forward(model, images, rng)
    finally:
        patches.undo()
        model.train(was_training)

    n = images.shape[0]
    layers = {name: t.result(1.0 / n) for name, t in tallies.items()
              if t.calls["forward"] or t.calls["step"]}
    by_module, total = {}, dict.fromkeys(_COUNTS, 0.0)
    for name, row in layers.items():
        group = by_module.setdefault(name.split(".")[0], dict.fromkeys(_COUNTS, 0.0))
        for key in _COUNTS:
            group[key] += row[key]
            total[key] += row[key]
    total["synaptic_ops"] = total["ac"] + total["mac"]
    return {"model": type(model).__name__, "images": int(n), "per": "image",
            "spiking": spiking_model, "layers": layers, "by_module": by_module, "total": total,
            "notes": "AC: additions triggered by input spikes (exact fan-out, borders and stride "
                     "included); MAC: dense multiply-adds of real-valued inputs and the membrane "
                     "readout; neuron updates: LIF neurons x T. Bias, normalisation and "
                     "activations not counted."}


def count_dense_macs(model, run, batch_size: int) -> dict:
    """Multiply-accumulates a dense implementation performs in ``run()``, per image.

    Every call of every weighted layer (full passes and one-step calls alike, in whatever mode
    the model is) is counted as if its input were real-valued: all input values times their
    fan-out (products with zero padding excluded, as in ``count_operations``), plus the membrane
    readout's T multiply-adds per output. This is the arithmetic of a dense kernel (im2col +
    GEMM), whatever the firing rates: the yardstick for comparing a run with the machine's
    matrix-product rate (FLOPs = 2 x MACs).

    Backward: each call made with gradients on costs about twice its forward MACs again (the
    input gradient and the weight gradient, the convention of bench/kernels.py; the membrane
    readout once). Calls under ``no_grad`` (FSVAE's posterior prefix loop, scheduled sampling)
    have no backward.

    Returns per image: forward, forward_no_grad (part of forward), backward, total, and
    by_module: top-level child -> forward MACs.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    sums = {"forward": 0, "forward_no_grad": 0, "backward": 0}
    by_module = {}
    patches = _Patches()

    def record(name, macs, backward_factor):
        sums["forward"] += macs
        top = name.split(".")[0]
        by_module[top] = by_module.get(top, 0) + macs
        if is_grad_enabled():
            sums["backward"] += backward_factor * macs
        else:
            sums["forward_no_grad"] += macs

    for name, m in _named(model).items():
        if isinstance(m, _WEIGHTED):
            def forward(x, *a, _m=m, _n=name, _f=m.forward, **kw):
                record(_n, _synaptic_ops(_m, _array(x), dense=True), 2)
                return _f(x, *a, **kw)
            patches.set(m, "forward", forward)
            if hasattr(m, "step"):
                def step(x_t, state=None, _m=m, _n=name, _f=m.step):
                    record(_n, _synaptic_ops(_m, _array(x_t), dense=True), 2)
                    return _f(x_t, state)
                patches.set(m, "step", step)
        elif isinstance(m, MembraneOutput):
            def forward(x, *a, _n=name, _f=m.forward, **kw):
                record(_n, _array(x).size, 1)
                return _f(x, *a, **kw)
            patches.set(m, "forward", forward)
    try:
        run()
    finally:
        patches.undo()
    per = {k: v / batch_size for k, v in sums.items()}
    per["total"] = per["forward"] + per["backward"]
    per["by_module"] = {k: v / batch_size for k, v in by_module.items()}
    return per


def energy_estimate(counts: dict, ac_pj: float = ENERGY_PJ["ac"],
                    mac_pj: float = ENERGY_PJ["mac"], neuron_update_pj: float = 0.0) -> dict:
    """Energy of the counted operations: E = AC * ac_pj + MAC * mac_pj (+ updates * neuron_update_pj).

    Defaults: 0.9 pJ per AC (32-bit float add) and 4.6 pJ per MAC (32-bit float multiply 3.7 pJ
    + add 0.9 pJ), 45 nm CMOS, Horowitz, ISSCC 2014: the figures most SNN papers quote. Neuron
    updates cost 0 by default, as in most such estimates (synaptic operations only); pass
    ``neuron_update_pj`` to include them. Memory traffic, which dominates on real hardware, is not
    modelled: the estimate compares arithmetic only.

    counts: the dict of ``count_operations`` (or any dict with a ``total`` of ac / mac /
    neuron_updates, optionally ``layers``). Returns per image: total_pj, total_uj, the parts,
    per-layer pJ when layers are given, and the energies used with their source.
    """
    for name, value in (("ac_pj", ac_pj), ("mac_pj", mac_pj), ("neuron_update_pj", neuron_update_pj)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a non-negative number, got {value}")
    if "total" not in counts:
        raise ValueError("energy_estimate needs the dict returned by count_operations (a 'total' "
                         "entry with 'ac', 'mac' and 'neuron_updates')")

    def energy(row):
        return (row.get("ac", 0.0) * ac_pj + row.get("mac", 0.0) * mac_pj
                + row.get("neuron_updates", 0.0) * neuron_update_pj)

    t = counts["total"]
    parts = {"ac_pj": t.get("ac", 0.0) * ac_pj, "mac_pj": t.get("mac", 0.0) * mac_pj,
             "neuron_update_pj": t.get("neuron_updates", 0.0) * neuron_update_pj}
    total = energy(t)
    return {"per": counts.get("per", "image"), "total_pj": total, "total_uj": total * 1e-6,
            "parts": parts,
            "layers": {name: energy(row) for name, row in counts.get("layers", {}).items()},
            "energy_per_op_pj": {"ac": ac_pj, "mac": mac_pj, "neuron_update": neuron_update_pj},
            "source": ENERGY_SOURCE}
