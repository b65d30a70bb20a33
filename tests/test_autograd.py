"""The autograd engine and every tensor op: central differences in float64, accumulation,
no_grad, detach, and clear errors."""
from __future__ import annotations

import numpy as np
import pytest

from snnvae import F, Tensor, no_grad
from snnvae.gradcheck import grad_check


def leaf(rng, *shape, positive=False):
    data = rng.uniform(0.5, 2.0, size=shape) if positive else rng.normal(size=shape)
    return Tensor(data, requires_grad=True)


def assert_grads_ok(fn, inputs):
    results = grad_check(fn, inputs, spike="spike")
    assert all(r.passed for r in results), "\n".join(map(str, results))


UNARY = {
    "neg": lambda a: -a,
    "exp": F.exp,
    "tanh": F.tanh,
    "sigmoid": F.sigmoid,
    "leaky_relu": lambda a: F.leaky_relu(a, 0.1),
    "abs": F.abs,
    "clip": lambda a: F.clip(a, -0.5, 0.7),
    "pow3": lambda a: a ** 3,
    "sum_axis": lambda a: a.sum(axis=1),
    "sum_keepdims": lambda a: a.sum(axis=(0, 2), keepdims=True),
    "mean": lambda a: a.mean(axis=0),
    "reshape": lambda a: a.reshape(4, 6) * 2,
    "permute": lambda a: a.permute(2, 0, 1) * np.arange(24.0).reshape(4, 2, 3),
    "transpose": lambda a: a.transpose(0, 2),
    "getitem_slice": lambda a: a[:, 1:, ::2],
    "getitem_repeated": lambda a: a[np.array([0, 0, 1])],
    "getitem_scalar_times_scalar": lambda a: a[0, 1, 2] * a[1, 0, 3],   # NumPy scalar grads
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_ops_match_finite_differences(name):
    rng = np.random.default_rng(1)
    x = leaf(rng, 2, 3, 4)
    # keep away from the kinks of abs / clip / leaky relu, where differences are undefined
    x.data[np.abs(x.data) < 0.05] += 0.2
    x.data[np.abs(x.data - 0.7) < 0.05] += 0.2
    x.data[np.abs(x.data + 0.5) < 0.05] += 0.2
    weights = Tensor(rng.normal(size=UNARY[name](Tensor(x.data)).shape))
    assert_grads_ok(lambda: (UNARY[name](x) * weights).sum(), [x])


def test_log_matches_finite_differences():
    rng = np.random.default_rng(2)
    x = leaf(rng, 3, 4, positive=True)
    assert_grads_ok(lambda: (F.log(x) * np.arange(12.0).reshape(3, 4)).sum(), [x])


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "maximum"])
def test_binary_ops_broadcast_and_match_finite_differences(op):
    rng = np.random.default_rng(3)
    a = leaf(rng, 2, 3, 4)
    b = leaf(rng, 3, 1, positive=True)   # broadcasts over axes 0 and 2
    fn = {"add": F.add, "sub": F.sub, "mul": F.mul, "div": F.div, "maximum": F.maximum}[op]
    w = Tensor(rng.normal(size=(2, 3, 4)))
    assert_grads_ok(lambda: (fn(a, b) * w).sum(), [a, b])
    assert b.grad.shape == (3, 1)


def test_matmul_batched_and_broadcast():
    rng = np.random.default_rng(4)
    a = leaf(rng, 2, 3, 4)
    b = leaf(rng, 4, 5)
    assert_grads_ok(lambda: ((a @ b) ** 2).sum(), [a, b])


def test_concat_and_gather():
    rng = np.random.default_rng(5)
    a, b = leaf(rng, 2, 3), leaf(rng, 2, 4)
    assert_grads_ok(lambda: (F.concat([a, b], axis=1) * np.arange(14.0).reshape(2, 7)).sum(), [a, b])
    x = leaf(rng, 3, 5)
    index = np.array([[0, 4, 4], [1, 1, 2], [3, 0, 0]])   # repeated picks must accumulate
    assert_grads_ok(lambda: (F.gather(x, index, axis=1) * np.arange(9.0).reshape(3, 3)).sum(), [x])
    picked = F.gather(Tensor(x.data), index, axis=1)
    np.testing.assert_array_equal(picked.data, np.take_along_axis(x.data, index, axis=1))


def test_gradients_accumulate_over_paths_and_calls():
    x = Tensor(np.array([2.0, -1.0]), requires_grad=True)
    y = (x * x + x * 3.0).sum()          # dy/dx = 2x + 3
    y.backward()
    np.testing.assert_allclose(x.grad, [7.0, 1.0])
    (x * 2.0).sum().backward()           # a second backward adds to .grad
    np.testing.assert_allclose(x.grad, [9.0, 3.0])


def test_diamond_graph_visits_shared_node_once():
    x = Tensor(np.array([1.5]), requires_grad=True)
    h = F.tanh(x)
    y = (h * h + h).sum()                # h feeds two paths into y
    y.backward()
    t = np.tanh(1.5)
    np.testing.assert_allclose(x.grad, (2 * t + 1) * (1 - t * t))


def test_graph_does_not_keep_intermediate_arrays_alive():
    """The graph links Nodes, not Tensors: an intermediate array that no ctx saved (Add saves
    only shapes) is freed once the user drops it, and backward still works."""
    import gc
    import weakref
    x = Tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
    hidden = x + 1.0
    probe = weakref.ref(hidden.data)
    y = (hidden + 2.0) * x               # Mul saves its inputs: hidden + 2, not hidden itself
    del hidden
    gc.collect()
    assert probe() is None, "the graph kept an intermediate array alive"
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data + 3.0)


def test_no_grad_and_detach_cut_the_graph():
    x = Tensor(np.ones(3), requires_grad=True)
    with no_grad():
        y = x * 2.0
    assert not y.requires_grad
    z = (x * 2.0).detach() * x
    z.sum().backward()
    np.testing.assert_allclose(x.grad, 2.0 * np.ones(3))


def test_backward_errors_are_clear():
    x = Tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(RuntimeError, match="scalar"):
        (x * 2.0).backward()
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(2)).sum().backward()
    with pytest.raises(ValueError, match="matmul shape mismatch"):
        Tensor(np.ones((2, 3))) @ Tensor(np.ones((4, 2)))
    with pytest.raises(TypeError, match="floating-point"):
        Tensor(np.arange(3), requires_grad=True)
    with pytest.raises(TypeError, match="integers"):
        F.gather(x, np.array([[0.5]]), axis=1)


def test_grad_check_detects_a_wrong_backward():
    """The checker itself must be able to fail."""
    from snnvae.autograd import Function

    class WrongSquare(Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a)
            return a * a

        @staticmethod
        def backward(ctx, g):
            (a,) = ctx.saved
            return (3 * a * g,)   # should be 2 a g

    x = Tensor(np.array([0.3, -1.2]), requires_grad=True)
    results = grad_check(lambda: WrongSquare.apply(x).sum(), [x], spike="spike")
    assert not results[0].passed


def test_python_scalars_keep_float32():
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    for y in (1.0 - x, 2.0 * x, 2.0 / x, x + 1.0, x ** 2):
        assert y.dtype == np.float32
    (1.0 - x).sum().backward()
    assert x.grad.dtype == np.float32


def test_grad_check_handles_non_contiguous_inputs():
    a = Tensor(np.random.default_rng(0).random((3, 4)).T, requires_grad=True)
    results = grad_check(lambda: (a * a).sum(), [a], spike="spike")
    assert results[0].passed, str(results[0])


def test_mixed_float_dtypes_are_refused():
    a = Tensor(np.ones(3, np.float32), requires_grad=True)
    b = Tensor(np.ones(3, np.float64))
    with pytest.raises(TypeError, match="cannot combine a float32 tensor with a float64"):
        a * b
    # plain arrays and numbers adopt the tensor's dtype
    assert (a * np.ones(3)).dtype == np.float32
    assert F.mse_loss(a, np.zeros(3)).dtype == np.float32
