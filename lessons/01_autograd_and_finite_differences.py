"""Lesson 01: reverse-mode autograd, and how finite differences keep it honest.

Every later lesson trains or checks a network by asking ``loss.backward()`` for gradients.
This lesson opens that box.

1. Tensors and the graph
   A ``Tensor`` wraps a NumPy array (``.data``). When an operation runs on tensors that
   require gradients, the result remembers *how* it was made: the ``Function`` that produced
   it, a context ``ctx`` holding whatever backward will need, and links to its inputs' own
   records (a ``Node`` each; a leaf links to itself). These links form a directed acyclic
   graph from the inputs (leaves) to the loss (root). The graph links records, not the
   intermediate tensors: an intermediate array stays in memory only while a variable or a
   ``ctx`` holds it, which is what lets a deep spiking network free its spikes early.

2. The chain rule, run backwards
   For a scalar loss L and a node y = f(x1, x2, ...), the Function's ``backward`` receives
   the upstream gradient dL/dy (same shape as y) and returns one gradient per input,

        dL/dx_i = (dL/dy) . (df/dx_i)           (a vector-Jacobian product)

   It never builds the Jacobian: for y = a * b (elementwise), dL/da = dL/dy * b.

3. Topological order and accumulation
   A tensor used twice (``a`` in ``a*b + a**2``) receives gradient along both paths, and the
   two contributions add:  dL/da = sum over consumers c of dL/dc * dc/da.  A node may only
   pass its gradient on once that sum is complete, i.e. after every consumer has been
   visited. Visiting nodes in reverse topological order (root first, every node before its
   parents) guarantees exactly that. Leaves also accumulate *across* ``backward()`` calls
   (``.grad += ...``), which is why training loops call ``zero_grad()``.

4. Finite differences
   An analytic gradient can be wrong in ways that still train "somewhat". The check is
   independent arithmetic: the central difference

        dL/dx_i  ~  (L(x + eps e_i) - L(x - eps e_i)) / (2 eps),

   whose truncation error is O(eps^2) (the forward difference's is O(eps)). Rounding adds an
   error of about machine_eps * |L| / eps, so eps cannot be too small either; in float64
   eps ~ 1e-6 balances the two (error ~ 1e-10), in float32 nothing works well, which is why
   ``snnvae.gradcheck`` insists on float64.

What this lesson checks (it exits with status 1 if any check fails):
  * gradients of a small scalar expression against values computed by hand;
  * accumulation inside one backward (a reused tensor) and across two backward calls;
  * broadcasting: a bias added to every row gets the row-sum of the upstream gradient;
  * a Function written here (softplus) against central differences, and a deliberately
    wrong one that the finite-difference check must reject;
  * the error of central vs forward differences as eps varies (the V-shaped curve);
  * a tiny tanh network, every parameter, through ``snnvae.gradcheck.grad_check``.

Figure: ``01_autograd_vs_numeric.png`` - analytic vs numeric derivative on a grid, and the
finite-difference error as a function of eps.

Run:  python lessons/01_autograd_and_finite_differences.py [--fast] [--out DIR] [--seed S]
"""
from __future__ import annotations

import numpy as np

from _common import Checker, banner, parse_args, plt, save_figure, section

from snnvae import F, Function, Tensor, gradcheck, no_grad
from snnvae.autograd import Node


# ---------------------------------------------------------------------------------------------
# A Function written in the lesson: softplus(x) = log(1 + e^x), derivative sigmoid(x).
# ---------------------------------------------------------------------------------------------
class Softplus(Function):
    """y = log(1 + exp(x)), computed stably as max(x, 0) + log1p(exp(-|x|))."""

    @staticmethod
    def forward(ctx, x):                     # x is a plain np.ndarray here
        ctx.save_for_backward(x)
        return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))

    @staticmethod
    def backward(ctx, g):                    # g = dL/dy, same shape as y
        (x,) = ctx.saved
        sig = 1.0 / (1.0 + np.exp(-x))       # dy/dx = sigmoid(x)
        return (g * sig,)                    # one gradient per positional input


class Sin(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.sin(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return (g * np.cos(x),)


class WrongSoftplus(Softplus):
    """Same forward, a plausible-looking but wrong backward (it is sigmoid's *own* slope)."""

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        sig = 1.0 / (1.0 + np.exp(-x))
        return (g * sig * (1.0 - sig),)


def vertex(t):
    """A tensor's place in the recorded graph: the Node that produced it (function, saved
    context, the inputs' own places), or the tensor itself for a leaf."""
    return t if t._node is None else t._node


def graph_order(root):
    """Reverse topological order of the recorded graph (root first), built here by hand:
    a depth-first search appends a vertex after all of its parents, then we reverse."""
    order, seen = [], set()

    def visit(v):
        if id(v) in seen:
            return
        seen.add(id(v))
        if isinstance(v, Node):
            for parent in v.parents:
                if parent is not None:
                    visit(parent)
        order.append(v)

    visit(vertex(root))
    return order[::-1]


def describe(v, names):
    if not isinstance(v, Node):
        return f"{names.get(id(v), '?')} (leaf)"
    args = ", ".join(names.get(id(p), "const") if p is not None else "const" for p in v.parents)
    return f"{names.get(id(v), '?')} = {v.fn.__name__}({args})"


def main():
    args = parse_args(__doc__)
    rng = np.random.default_rng(args.seed)
    chk = Checker("lesson 01")
    banner("Lesson 01: autograd and finite differences")

    # -----------------------------------------------------------------------------------------
    section("1. a graph small enough to differentiate by hand")
    a = Tensor(np.array(2.0), requires_grad=True)
    b = Tensor(np.array(-3.0), requires_grad=True)
    c = a * b            # -6
    d = a ** 2           #  4
    e = c + d            # -2
    L = e * e            #  4
    names = {id(vertex(t)): name for t, name in [(a, "a"), (b, "b"), (c, "c"), (d, "d"),
                                                 (e, "e"), (L, "L")]}
    print("  a = 2, b = -3;  c = a*b, d = a**2, e = c + d, L = e*e")
    print("  nodes in the order backward visits them (every consumer before its inputs):")
    for t in graph_order(L):
        print("    " + describe(t, names))
    L.backward()
    # By hand: dL/de = 2e = -4;  de/da = b + 2a = 1 (two paths!);  de/db = a = 2.
    print(f"  L = {L.item():g};  dL/da = {a.grad.item():g} (hand: 2e*(b+2a) = -4), "
          f"dL/db = {b.grad.item():g} (hand: 2e*a = -8)")
    chk.close("forward value L = 4", L.data, 4.0)
    chk.close("dL/da = 2e (b + 2a) = -4: both paths through a add up", a.grad, -4.0)
    chk.close("dL/db = 2e a = -8", b.grad, -8.0)
    chk.check("intermediate tensors keep no .grad (only leaves do)", c.grad is None and e.grad is None)

    section("2. accumulation across backward() calls")
    x = Tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
    y = (x * x + x).sum()                    # dy/dx = 2x + 1
    y.backward()
    first = x.grad.copy()
    y.backward()                             # same graph again: .grad adds up
    print(f"  y = sum(x^2 + x), x = {x.data};  grad after 1 call {first}, after 2 calls {x.grad}")
    chk.close("after one backward, grad = 2x + 1", first, 2 * x.data + 1)
    chk.close("after two backward calls, grad = 2 (2x + 1)", x.grad, 2 * (2 * x.data + 1))
    x.zero_grad()
    chk.check("zero_grad() clears it", x.grad is None)

    section("3. broadcasting: the adjoint of 'copy to every row' is 'sum over rows'")
    W = Tensor(rng.normal(size=(4, 3)), requires_grad=True)
    bias = Tensor(rng.normal(size=3), requires_grad=True)
    g_up = rng.normal(size=(4, 3))
    (W + bias).backward(g_up)                # pass dL/d(output) explicitly
    print(f"  (4,3) + (3,) -> (4,3);  bias.grad has shape {bias.grad.shape}")
    chk.close("bias gradient = upstream gradient summed over the broadcast rows",
              bias.grad, g_up.sum(axis=0))

    # -----------------------------------------------------------------------------------------
    section("4. a Function written in this lesson, checked by central differences")
    print("  Softplus.forward: y = log(1 + e^x);  Softplus.backward: dL/dx = dL/dy * sigmoid(x)")
    xs = Tensor(rng.normal(size=(3, 5)) * 3, requires_grad=True)
    good = gradcheck.grad_check(lambda: (Softplus.apply(xs) * xs).sum(), [xs], ["x"],
                                spike="spike")
    print("  " + str(good[0]))
    chk.grad_results("softplus(x) * x", good)
    bad = gradcheck.grad_check(lambda: (WrongSoftplus.apply(xs) * xs).sum(), [xs], ["x"],
                               spike="spike")
    print(f"  WrongSoftplus: max abs err {bad[0].max_abs_error:.2e} -> rejected, as it must be")
    chk.check("the finite-difference check rejects the wrong backward", not bad[0].passed)

    x32 = Tensor(np.ones(3, np.float32), requires_grad=True)
    try:
        gradcheck.grad_check(lambda: Softplus.apply(x32).sum(), [x32])
        refused = False
    except TypeError as err:
        refused = True
        print(f"  float32 is refused: {err}")
    chk.check("grad_check refuses float32 inputs", refused)

    # -----------------------------------------------------------------------------------------
    section("5. analytic vs numeric derivative on a grid, and the choice of eps")
    n_grid = 41 if args.fast else 201
    grid = Tensor(np.linspace(-4, 4, n_grid), requires_grad=True)

    def f_total():  # elementwise f(x) = softplus(x) * sin(x); the sum makes L scalar
        return (Softplus.apply(grid) * Sin.apply(grid)).sum()

    def f_forgot_a_path():
        # np.sin on the raw array is invisible to autograd: sin(x) becomes a constant, so
        # backward silently drops the softplus(x) cos(x) term. The values are identical.
        return (Softplus.apply(grid) * Tensor(np.sin(grid.data))).sum()

    grid.zero_grad()
    f_total().backward()
    analytic = grid.grad.copy()
    numeric = gradcheck.numerical_grad(f_total, grid, np.arange(grid.size), eps=1e-6)
    xv = grid.data
    sig = 1 / (1 + np.exp(-xv))
    exact = sig * np.sin(xv) + np.logaddexp(0, xv) * np.cos(xv)
    chk.close("autograd = closed form sigma(x) sin x + softplus(x) cos x", analytic, exact,
              atol=1e-12, rtol=1e-10)
    chk.close("central differences agree with autograd on the grid", numeric, analytic,
              atol=1e-8, rtol=1e-6)
    grid.zero_grad()
    f_forgot_a_path().backward()
    chk.check("treating sin(x) as a constant (forgetting a path) gives a different gradient",
              np.max(np.abs(grid.grad - exact)) > 0.5,
              f"max difference {np.max(np.abs(grid.grad - exact)):.2f}")

    # error vs eps at one point
    x0 = Tensor(np.array([0.7]), requires_grad=True)

    def f0():
        return (Softplus.apply(x0) * Sin.apply(x0)).sum()

    s0 = 1 / (1 + np.exp(-0.7))
    true0 = s0 * np.sin(0.7) + np.logaddexp(0, 0.7) * np.cos(0.7)
    epss = np.logspace(-13, -1, 25)
    central_err, forward_err = [], []
    with no_grad():
        f_at = f0().item()
        for eps in epss:
            central_err.append(abs(gradcheck.numerical_grad(f0, x0, [0], eps)[0] - true0))
            x0.data[0] += eps
            forward_err.append(abs((f0().item() - f_at) / eps - true0))
            x0.data[0] -= eps
    central_err, forward_err = np.array(central_err), np.array(forward_err)
    best = epss[np.argmin(central_err)]
    print(f"  central difference: best eps ~ {best:.0e}, error {central_err.min():.1e};  "
          f"forward difference best error {forward_err.min():.1e}")
    i4 = np.argmin(np.abs(epss - 1e-4))
    chk.check("central error at eps=1e-4 is O(eps^2): below 1e-7",
              central_err[i4] < 1e-7, f"{central_err[i4]:.1e}")
    chk.check("forward error at eps=1e-4 is O(eps): 100x larger than central",
              forward_err[i4] > 100 * central_err[i4], f"{forward_err[i4]:.1e}")
    chk.check("too small an eps is worse: rounding error at eps=1e-13 exceeds the best by 100x",
              central_err[0] > 100 * central_err.min(), f"{central_err[0]:.1e}")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(xv, analytic, "-", label="autograd (backward)")
    ax1.plot(xv[::2], numeric[::2], "o", ms=4, mfc="none", label="central differences")
    ax1.plot(xv, grid.grad, ":", color="gray", label="sin treated as constant (a bug)")
    ax1.set(title="d/dx [softplus(x) sin(x)]", xlabel="x", ylabel="derivative")
    ax1.legend(fontsize=8)
    ax2.loglog(epss, np.maximum(central_err, 1e-17), "o-", label="central  (L(x+e)-L(x-e))/2e")
    ax2.loglog(epss, np.maximum(forward_err, 1e-17), "s-", label="forward  (L(x+e)-L(x))/e")
    ax2.loglog(epss, epss ** 2 * 0.1, "k:", lw=1, label="slope 2 (truncation)")
    ax2.loglog(epss, 1e-16 / epss, "k--", lw=1, label="1e-16 / eps (rounding)")
    ax2.set(title="finite-difference error vs step (float64)", xlabel="eps",
            ylabel="|numeric - exact|", ylim=(1e-17, 1))
    ax2.legend(fontsize=8)
    save_figure(fig, args.out, "01_autograd_vs_numeric.png")

    # -----------------------------------------------------------------------------------------
    section("6. every parameter of a tiny network, through snnvae.gradcheck.grad_check")
    n, d_in, d_hid = (4, 3, 5) if args.fast else (8, 6, 10)
    X = Tensor(rng.normal(size=(n, d_in)))
    target = Tensor(rng.uniform(-1, 1, size=(n, 1)))
    W1 = Tensor(rng.normal(size=(d_hid, d_in)) * 0.5, requires_grad=True)
    b1 = Tensor(rng.normal(size=d_hid) * 0.1, requires_grad=True)
    W2 = Tensor(rng.normal(size=(1, d_hid)) * 0.5, requires_grad=True)

    def net_loss():
        h = F.tanh(F.linear(X, W1, b1))
        return F.mse_loss(F.tanh(F.linear(h, W2)), target)

    results = gradcheck.grad_check(net_loss, [W1, b1, W2], ["W1", "b1", "W2"], spike="spike")
    for r in results:
        print("  " + str(r))
    chk.grad_results("tanh MLP + MSE", results)

    chk.finish()


if __name__ == "__main__":
    main()
