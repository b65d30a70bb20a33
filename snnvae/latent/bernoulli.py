"""FSVAE's autoregressive Bernoulli latent: posterior q(z_t | x_<=t, z_<t), prior p(z_t | z_<t).

Shapes (time first): C = latent channels, k = outputs per channel.
    x        (T, N, C)      spikes of the layer before the latent
    q_z, p_z (T, N, C, k)   spikes of the posterior / prior networks; unit c*k + j of the last
                            layer is member j of channel c's group
    z        (T, N, C)      sampled latent spikes

The one-of-k pick. At step t, for each sample n and channel c, one of the k spikes
q_z[t, n, c, :] is chosen uniformly at random: z_t[n, c] = q_z[t, n, c, pick]. Given the
network's output, z_t is a Bernoulli variable with probability (spikes in the group) / k, and it
is differentiable with respect to the picked spike (the gradient flows to the spike that was
chosen, the others get none).

Both networks are three spiking linears with tdBN (alpha = 2) and LIF neurons. The posterior
sees [x_t, z_{t-1}] (2C features, z_{-1} = 0) and the prior sees z_{t-1} alone (C features).
Because z_{t-1} must be sampled before step t can run, sampling is a loop over time.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..autograd import Tensor, is_grad_enabled, no_grad
from ..device import contiguous, place_like
from ..nn import Module, Sequential, SpikingLinear


class RandomPicks:
    """Draws the one-of-k picks from a numpy Generator: draw(t, N, C) -> int (N, C) in [0, k)."""

    def __init__(self, k: int, rng: np.random.Generator):
        self.k, self.rng = k, rng

    def draw(self, t, n, c):
        return self.rng.integers(0, self.k, size=(n, c))


class ReplayPicks:
    """Replays recorded picks (T, N, C), e.g. those the official code drew, in step order."""

    def __init__(self, picks):
        self.picks = np.asarray(picks)

    def draw(self, t, n, c):
        if self.picks[t].shape != (n, c):
            raise ValueError(f"recorded picks for step {t} have shape {self.picks[t].shape}, "
                             f"the model needs ({n}, {c})")
        return self.picks[t]


def pick_array(q_t, picks):
    """The same pick on plain arrays (no gradient): q_t (..., C, k), picks (..., C) -> (..., C)."""
    return np.take_along_axis(q_t, np.asarray(picks)[..., None], axis=-1)[..., 0]


def pick_one_of_k(q_t, picks):
    """q_t (..., C, k) Tensor, picks (..., C) ints -> z (..., C): the chosen spike of each group."""
    chosen = F.gather(q_t, np.asarray(picks)[..., None], axis=-1)
    return F.reshape(chosen, chosen.shape[:-1])


def latent_network(in_features, channels, k, rng, dtype, lif_options=None):
    """in -> 2C -> 4C -> kC, each a spiking linear with tdBN(alpha = 2) and LIF."""
    widths = [in_features, 2 * channels, 4 * channels, k * channels]
    return Sequential(*[SpikingLinear(a, b, alpha=2.0, rng=rng, dtype=dtype, lif_options=lif_options)
                        for a, b in zip(widths[:-1], widths[1:])])


class _SteppedNetwork:
    """Runs a Sequential of spiking blocks one time step at a time (eval mode, O(T) in all)."""

    def __init__(self, layers: Sequential):
        self.layers = list(layers)
        self.state = [None] * len(self.layers)

    def step(self, x_t):
        """x_t (N, F_in) array -> spikes (N, F_out) of the last layer at this step."""
        h = x_t
        for i, layer in enumerate(self.layers):
            h, self.state[i] = layer.step(h, self.state[i])
        return h


class _PrefixNetwork:
    """Runs a Sequential of spiking linear blocks on growing prefixes of one sequence, in
    training mode and without gradient, as the official sampling loop does (each run
    normalises with the batch statistics of its own prefix and updates the running ones),
    with the same spikes up to the order of the additions, at a fraction of the cost.

    ``run(x)`` with x (t, N, F_in) = ``layers(x)``. Between two runs the rows seen before
    keep their inputs to the first layer, and the spikes a layer feeds the next mostly stay
    as they were (the statistics move a little with every longer prefix: 1-10 % of them flip
    in FSVAE's posterior). So each layer keeps its linear outputs y (rows, F_out) and its
    inputs of the last run, and moves y to the new inputs (``F.update_linear_outputs``:
    one row of W^T added per changed input), computing only the new rows densely; tdBN and
    LIF then run on all rows, as before.

    Not used while a layer's forward is instrumented (operation counts follow forward calls):
    then the network is called on each prefix as it is."""

    def __init__(self, layers: Sequential):
        self.network = layers
        self.layers = list(layers)
        self.instrumented = any("forward" in vars(m) for m in (layers, *self.layers))
        self.weights_t = None if self.instrumented else [
            contiguous(layer.weight.data.T) for layer in self.layers]
        self.inputs = [None] * len(self.layers)     # each layer's input rows of the last run
        self.outputs = [None] * len(self.layers)    # ... and a buffer of its linear outputs

    def run(self, x):
        """x (t, N, F_in) array -> spikes (t, N, F_out) of the last layer."""
        if self.instrumented:
            return self.network(Tensor(x)).data
        t, n = x.shape[:2]
        h = x
        for i, layer in enumerate(self.layers):
            rows = h.reshape(t * n, -1)
            y = self._linear_outputs(i, layer, rows)
            h = layer.neurons(Tensor(y.reshape(t, n, -1))).data
        return h

    def _linear_outputs(self, i, layer, rows):
        """The linear outputs (rows, F_out) of layer i for these input rows: those of the rows
        seen before moved to their new inputs, the new rows computed. They live at the start
        of a buffer that grows as the prefix does, so the old rows are never copied."""
        old_rows, buffer = self.inputs[i], self.outputs[i]
        seen = 0 if old_rows is None else len(old_rows)
        if buffer is None or len(buffer) < len(rows):
            grown = np.empty((max(len(rows), 2 * seen), layer.weight.shape[0]),
                             dtype=rows.dtype, like=rows)
            if seen:
                grown[:seen] = buffer[:seen]
            buffer = grown
        if seen:
            F.update_linear_outputs(buffer[:seen], rows[:seen], old_rows, self.weights_t[i])
        if len(rows) > seen:
            bias = None if layer.bias is None else layer.bias.data
            buffer[seen:len(rows)] = F.linear(Tensor(rows[seen:]), layer.weight.data, bias).data
        self.inputs[i], self.outputs[i] = rows, buffer
        return buffer[:len(rows)]


class BernoulliPosterior(Module):
    """q(z_t | x_<=t, z_<t) with the official two-pass sampling (see ``forward``)."""

    def __init__(self, channels, k, *, rng, dtype=np.float32, lif_options=None,
                 prefix_updates_bn=True):
        super().__init__()
        self.channels, self.k = channels, k
        self.prefix_updates_bn = prefix_updates_bn
        self.layers = latent_network(2 * channels, channels, k, rng, dtype, lif_options)

    def spikes(self, x, z_in):
        """Run the posterior network on given inputs: x, z_in (t, N, C) -> q (t, N, C, k).

        One pass over the whole sequence, without sampling (what the official code runs on each
        prefix and then on the full sequence)."""
        out = self.layers(F.concat([x, z_in], axis=-1))
        return F.reshape(out, (*out.shape[:-1], self.channels, self.k))

    def forward(self, x, picker, z_in=None):
        """x (T, N, C) spikes -> (q_z (T, N, C, k), z (T, N, C)).

        z_in: optional (T, N, C) latent inputs (0, z_0, .., z_{T-2}) to use instead of sampling
        them (teacher forcing; with it, the loss is a smooth function of the parameters in the
        stand-in spike mode, which is what the whole-model finite-difference test needs).

        Training mode reproduces the official procedure:
        1. without gradient, for t = 0..T-2: run the network on the prefix [x_<=t, z_in_<=t]
           and pick z_t from its last step; z_in = (0, z_0, ..., z_{T-2}). In training mode
           every prefix call normalises with its own batch statistics and (by default, as the
           official code) updates the tdBN running statistics: T-1 extra updates per call.
        2. with gradient, one pass over the whole sequence [x, z_in] gives q_z; z_t is re-picked
           from it with the same picks, plus a fresh pick at t = T-1.
        Eval mode does step 1 incrementally (O(T), exact) and step 2 as one pass; without
        gradients (``no_grad``) it runs step T-1 incrementally too and skips step 2.
        """
        T, N, C = x.shape
        if C != self.channels:
            raise ValueError(f"posterior expects {self.channels} channels, got input {x.shape}")
        picks = np.empty((T, N, C), dtype=np.int64)
        if z_in is not None:
            z_in = z_in.data if isinstance(z_in, Tensor) else z_in
            z_in = place_like(z_in, x.data).astype(x.dtype, copy=False)
            if z_in.shape != (T, N, C):
                raise ValueError(f"z_in must have shape {(T, N, C)}, got {z_in.shape}")
            for t in range(T - 1):
                picks[t] = picker.draw(t, N, C)
        elif self.training:
            z_in = np.zeros((T, N, C), dtype=x.dtype, like=x.data)
            saved = None if self.prefix_updates_bn else _bn_state(self.layers)
            with no_grad():
                prefixes = _PrefixNetwork(self.layers)
                for t in range(T - 1):
                    inputs = np.concatenate([x.data[:t + 1], z_in[:t + 1]], axis=-1)
                    q_t = prefixes.run(inputs)[t].reshape(N, C, self.k)
                    picks[t] = picker.draw(t, N, C)
                    z_in[t + 1] = pick_array(q_t, picks[t])
            if saved is not None:
                _restore_bn_state(self.layers, saved)
        else:
            z_in = np.zeros((T, N, C), dtype=x.dtype, like=x.data)
            stepper = _SteppedNetwork(self.layers)
            q = np.empty((T, N, C, self.k), dtype=x.dtype, like=x.data)

            def step(t):
                inputs = np.concatenate([x.data[t], z_in[t]], axis=-1)
                q[t] = stepper.step(inputs).reshape(q[t].shape)

            for t in range(T - 1):
                step(t)
                picks[t] = picker.draw(t, N, C)
                z_in[t + 1] = pick_array(q[t], picks[t])
            if not is_grad_enabled():        # the steps are the whole answer: no second pass
                step(T - 1)
                picks[T - 1] = picker.draw(T - 1, N, C)
                return Tensor(q), Tensor(pick_array(q, picks))
        q_z = self.spikes(x, Tensor(z_in))
        picks[T - 1] = picker.draw(T - 1, N, C)
        return q_z, pick_one_of_k(q_z, picks)


class BernoulliPrior(Module):
    """p(z_t | z_<t): the network sees z_{t-1} (z_{-1} = 0) and predicts the k spikes of z_t."""

    def __init__(self, channels, k, *, rng, dtype=np.float32, lif_options=None,
                 prefix_updates_bn=True):
        super().__init__()
        self.channels, self.k = channels, k
        self.prefix_updates_bn = prefix_updates_bn
        self.layers = latent_network(channels, channels, k, rng, dtype, lif_options)

    def spikes(self, z_in):
        """Run the prior network on given inputs: z_in (t, N, C) -> p (t, N, C, k)."""
        out = self.layers(z_in)
        return F.reshape(out, (*out.shape[:-1], self.channels, self.k))

    def forward(self, z, scheduled_p=0.0, rng=None, first_scheduled_step=5):
        """z (T, N, C) posterior samples -> p_z (T, N, C, k) for the inputs (0, z_0..z_{T-2}).

        Scheduled sampling (training only, scheduled_p > 0): for each step t >= 5, with
        probability scheduled_p (one coin for the whole batch, from ``rng``), the input
        z_in_{t+1} is replaced by the prior's own guess 1[mean_k p(z_t) + 0.001 noise > 0.5],
        computed without gradient from the prior run on the prefix so far. As in the official
        code those prefix runs are in training mode and update the tdBN running statistics
        (unless prefix_updates_bn is False).
        """
        z = Tensor(z.data) if isinstance(z, Tensor) else Tensor(z)   # the prior never moves z
        T, N, C = z.shape
        z_in = np.zeros((T, N, C), dtype=z.dtype, like=z.data)
        z_in[1:] = z.data[:-1]
        if self.training and scheduled_p > 0:
            if rng is None:
                raise ValueError("scheduled sampling needs rng=np.random.Generator")
            saved = None if self.prefix_updates_bn else _bn_state(self.layers)
            with no_grad():
                prefixes = _PrefixNetwork(self.layers)
                for t in range(first_scheduled_step, T - 1):
                    if rng.random() < scheduled_p:
                        p_t = prefixes.run(z_in[:t + 1])[t].reshape(N, C, self.k)
                        guess = p_t.mean(axis=-1) + 0.001 * rng.standard_normal((N, C))
                        z_in[t + 1] = (guess > 0.5).astype(z.dtype)
            if saved is not None:
                _restore_bn_state(self.layers, saved)
        return self.spikes(Tensor(z_in))

    def sample(self, n, timesteps, picker, dtype=None):
        """Generate z (T, n, C) from the prior in eval mode, one step at a time (O(T)).

        z_{-1} = 0; at each step the prior's k spikes per channel are computed from z_{t-1}, one
        of them is picked, and the result is fed back.
        """
        dtype = dtype or self.layers[0].weight.dtype
        stepper = _SteppedNetwork(self.layers)
        where = self.layers[0].weight.data          # the arrays live where the weights do
        z = np.zeros((timesteps, n, self.channels), dtype=dtype, like=where)
        z_prev = np.zeros((n, self.channels), dtype=dtype, like=where)
        for t in range(timesteps):
            p_t = stepper.step(z_prev).reshape(n, self.channels, self.k)
            picks = picker.draw(t, n, self.channels)
            z[t] = z_prev = pick_array(p_t, picks)
        return z

    def sample_by_prefix(self, n, timesteps, picker, dtype=None):
        """The official O(T^2) generation: re-run the prior on the whole prefix at every step."""
        dtype = dtype or self.layers[0].weight.dtype
        z_in = np.zeros((timesteps, n, self.channels), dtype=dtype,
                        like=self.layers[0].weight.data)
        z = np.zeros_like(z_in)
        with no_grad():
            for t in range(timesteps):
                p_t = self.spikes(Tensor(z_in[:t + 1])).data[t]
                picks = picker.draw(t, n, self.channels)
                z[t] = pick_array(p_t, picks)
                if t + 1 < timesteps:
                    z_in[t + 1] = z[t]
        return z


def _bn_state(layers):
    return [(l.bn.running_mean.copy(), l.bn.running_var.copy(), l.bn.num_batches_tracked.copy())
            for l in layers]


def _restore_bn_state(layers, saved):
    for layer, (mean, var, count) in zip(layers, saved):
        layer.bn.running_mean[:] = mean
        layer.bn.running_var[:] = var
        layer.bn.num_batches_tracked = count
