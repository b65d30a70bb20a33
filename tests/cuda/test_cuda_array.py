"""DeviceArray, the NumPy duck array on the GPU, against NumPy on tiny arrays.

Every operation runs on the device (kernels of elementwise.py, reduce_axes.py, along_axis.py,
gemm.py) and is compared with the same NumPy expression on host copies: values, shapes and
dtypes (NEP 50 result types). Views must share memory where documented, copies must not.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import TOLERANCES

from snnvae.kernels.cuda import array as da
from snnvae.kernels.cuda import launch, reduce_axes
from snnvae.device import is_device, to_host
from snnvae.kernels.cuda.array import DeviceArray

# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def random(rng, shape, dtype=np.float64, low=-2.0, high=2.0):
    """Values in [low, high), with some repeated exactly (so that comparisons meet ties)."""
    x = rng.uniform(low, high, size=shape)
    x[..., ::3] = np.maximum(np.round(x[..., ::3]), low)
    return x.astype(dtype)


def assert_same(got, want, what="result"):
    """``got`` is a DeviceArray holding ``want`` (same shape and dtype; floats within the
    dtype's tolerance, NaN and inf where NumPy has them, everything else exact)."""
    assert isinstance(got, DeviceArray), f"{what}: got {type(got).__name__}, not a DeviceArray"
    want = np.asarray(want)
    host = got.copy_to_host()
    assert host.shape == want.shape, f"{what}: shape {host.shape}, expected {want.shape}"
    assert host.dtype == want.dtype, f"{what}: dtype {host.dtype}, expected {want.dtype}"
    if want.dtype.kind == "f":
        np.testing.assert_allclose(host, want, err_msg=what, **TOLERANCES[want.dtype])
    else:
        np.testing.assert_array_equal(host, want, err_msg=what)


def both(f, *operands):
    """f on DeviceArrays (host arrays among ``operands`` copied over) and on the host arrays:
    (device result, NumPy result)."""
    on_device = [da.asdevice(x) if isinstance(x, np.ndarray) else x for x in operands]
    return f(*on_device), f(*operands)


def check(f, *operands, what="result"):
    got, want = both(f, *operands)
    assert_same(got, want, what)
    return got


def shares_memory(view, base):
    """True when writing through ``view`` changes ``base`` (both DeviceArrays of numbers); a
    selection copy, which refuses writes, does not."""
    if view._selection_copy:
        with pytest.raises(ValueError, match="copy of a strided selection"):
            view.fill(0)
        return False
    before = base.copy_to_host()
    view.fill(np.abs(before).max(initial=0) + 1)
    return not np.array_equal(base.copy_to_host(), before)


def reference_add_at(target, index, values, axis):
    """target[..., index[..., i, ...], ...] += values[..., i, ...] with NumPy, duplicates added."""
    target = target.copy()
    values = np.broadcast_to(values, index.shape)
    for m in np.ndindex(*index.shape):
        at = list(m)
        at[axis] = index[m]
        target[tuple(at)] += values[m]
    return target


# --------------------------------------------------------------------------------------------
# Elementwise operations
# --------------------------------------------------------------------------------------------

BINARY = [np.add, np.subtract, np.multiply, np.divide, np.power, np.maximum, np.minimum,
          np.greater, np.greater_equal, np.less, np.less_equal, np.equal, np.not_equal,
          np.logical_and, np.logical_or]
# (shape of a, shape of b or None for a scalar): scalar, row, column, other ndim, same shape.
BROADCASTS = [((2, 3), None), ((2, 3), (3,)), ((2, 3), (2, 1)), ((2, 1, 3), (4, 1)),
              ((3, 4), (3, 4))]


@pytest.mark.parametrize("ufunc", BINARY, ids=lambda u: u.__name__)
def test_binary_ufuncs_broadcast_like_numpy(rng, dtype, ufunc):
    low = 0.5 if ufunc in (np.power, np.divide) else -2.0      # no 0 ** -x, no x / 0
    for a_shape, b_shape in BROADCASTS:
        a = random(rng, a_shape, dtype, low=low)
        b = 1.5 if b_shape is None else random(rng, b_shape, dtype, low=low)
        what = f"{ufunc.__name__} {a_shape} with {b_shape or 'a scalar'}"
        check(ufunc, a, b, what=what)
        check(ufunc, b, a, what=what + " (reflected)")


def test_operators_match_numpy(rng, dtype):
    a, b = random(rng, (2, 3), dtype, low=0.5), random(rng, (3,), dtype, low=0.5)
    for name, f in [("+", lambda x, y: x + y), ("-", lambda x, y: x - y),
                    ("*", lambda x, y: x * y), ("/", lambda x, y: x / y),
                    ("**", lambda x, y: x ** y), ("**2", lambda x, y: x ** 2),
                    ("2**", lambda x, y: 2.0 ** x), ("3-", lambda x, y: 3 - x),
                    ("1/", lambda x, y: 1 / x), (">", lambda x, y: x > y),
                    (">=", lambda x, y: x >= y), ("<", lambda x, y: x < y),
                    ("<=", lambda x, y: x <= y), ("==", lambda x, y: x == y),
                    ("!=", lambda x, y: x != y), ("neg", lambda x, y: -x),
                    ("pos", lambda x, y: +x), ("abs", lambda x, y: abs(x - 1))]:
        check(f, a, b, what=name)


UNARY = [np.negative, np.positive, np.square, np.sqrt, np.exp, np.log, np.tanh, np.absolute,
         np.sign, np.logical_not]


@pytest.mark.parametrize("ufunc", UNARY, ids=lambda u: u.__name__)
def test_unary_ufuncs_match_numpy(rng, dtype, ufunc):
    x = random(rng, (3, 5), dtype, low=0.1 if ufunc in (np.sqrt, np.log) else -3.0)
    check(ufunc, x, what=ufunc.__name__)
    with np.errstate(divide="ignore"):
        check(ufunc, x[:, :1] * 0, what=ufunc.__name__ + " of zeros")


def test_edge_values_match_numpy(dtype):
    x = np.array([0.0, -1.0, 1000.0, -0.0, np.nan, np.inf], dtype=dtype)
    with np.errstate(all="ignore"):
        for ufunc in (np.sqrt, np.log, np.exp, np.sign, np.tanh, np.absolute):
            check(ufunc, x, what=f"{ufunc.__name__} of {x}")
        for ufunc in (np.maximum, np.minimum):
            check(ufunc, x, 0.5, what=f"{ufunc.__name__} of {x} and 0.5 (NaN propagates)")
            check(ufunc, 0.5, x, what=f"{ufunc.__name__} of 0.5 and {x} (NaN propagates)")


def test_result_dtypes_follow_numpy_2():
    f32 = np.ones((2, 2), np.float32)
    cases = [lambda a: a * 2.0, lambda a: 2 * a, lambda a: a + a.astype(np.float64),
             lambda a: a + np.float64(1.0), lambda a: a.astype(np.int32) + 1.5,
             lambda a: a.astype(np.int32) * 2, lambda a: a.astype(bool) + a.astype(bool),
             lambda a: a.astype(bool) * 3, lambda a: a > 0.5, lambda a: np.exp(a),
             lambda a: np.exp(a.astype(np.int64)), lambda a: np.logical_not(a),
             lambda a: a.astype(np.int32) / a.astype(np.int32), lambda a: a ** 2,
             lambda a: a ** 2.0, lambda a: a ** np.float64(2), lambda a: a ** np.int64(2)]
    for i, f in enumerate(cases):
        check(f, f32, what=f"case {i}")


def test_host_arrays_and_numpy_scalars_on_the_left_stay_on_the_device(rng, dtype):
    a = random(rng, (2, 3), dtype)
    host = random(rng, (3,), np.float64)
    for what, f in [("ndarray + ", lambda x: host + x), ("ndarray * ", lambda x: host * x),
                    ("np scalar * ", lambda x: np.float32(2) * x),
                    ("ndarray > ", lambda x: host > x)]:
        got = f(da.asdevice(a))
        assert_same(got, f(a), what)


def test_in_place_operators_write_into_the_same_buffer(rng, dtype):
    a, b = random(rng, (3, 4), dtype, low=0.5), random(rng, (4,), dtype, low=0.5)
    d = da.asdevice(a)
    buffer, row = d.device, d[1]
    d += da.asdevice(b)
    d -= 0.5
    d *= b                      # a host array operand
    d /= 2
    a = ((a + b) - 0.5) * b / 2
    assert d.device is buffer
    assert_same(d, a, "after += -= *= /=")
    assert_same(row, a[1], "a view taken before the in-place operations")
    with pytest.raises(TypeError, match="same_kind"):
        i = da.asdevice(np.zeros(3, np.int64))
        i += 1.5


def test_out_argument(rng, dtype):
    a, b = random(rng, (2, 3), dtype), random(rng, (3,), dtype)
    out = da.empty((2, 3), dtype)
    assert np.add(da.asdevice(a), da.asdevice(b), out=out) is out
    assert_same(out, a + b, "np.add out=")
    assert np.exp(da.asdevice(b), out=out) is out
    assert_same(out, np.broadcast_to(np.exp(b), (2, 3)), "np.exp out= (broadcast)")
    d = da.asdevice(a)
    np.tanh(d, out=(d,))
    assert_same(d, np.tanh(a), "np.tanh out=(itself,)")
    with pytest.raises(ValueError, match="non-broadcastable output"):
        np.add(da.asdevice(a), 1.0, out=da.empty((3,), dtype))


def test_operands_overlapping_the_output_are_buffered_like_numpy(rng, dtype):
    a = random(rng, (3, 4), dtype)
    d = da.asdevice(a)
    d += d[0]                                   # row 0 is read by every row and rewritten
    a += a[0]
    assert_same(d, a, "a += a[0]")
    np.multiply(d[:1], d, out=d)
    np.multiply(a[:1], a, out=a)
    assert_same(d, a, "np.multiply(a[:1], a, out=a)")
    d[1:] = d[:-1]                              # a shift along the leading axis
    a[1:] = a[:-1]
    assert_same(d, a, "a[1:] = a[:-1]")


# --------------------------------------------------------------------------------------------
# Reductions
# --------------------------------------------------------------------------------------------

REDUCTIONS = [("sum", lambda x, **k: x.sum(**k)), ("mean", lambda x, **k: x.mean(**k)),
              ("max", lambda x, **k: x.max(**k)), ("min", lambda x, **k: x.min(**k)),
              ("np.sum", np.sum), ("np.mean", np.mean), ("np.max", np.max),
              ("np.amax", np.amax), ("np.min", np.min), ("np.amin", np.amin)]


@pytest.mark.parametrize("name, reduction", REDUCTIONS, ids=[r[0] for r in REDUCTIONS])
def test_reductions_over_axes_with_keepdims(rng, dtype, name, reduction):
    x = random(rng, (2, 3, 4), dtype)
    for axis in (None, 0, -1, (0, 2), (-1, -2)):
        for keepdims in (False, True):
            check(lambda a: reduction(a, axis=axis, keepdims=keepdims), x,
                  what=f"{name} axis={axis} keepdims={keepdims}")


def test_long_reductions_use_a_block_per_output(rng, dtype):
    """At least BLOCK_REDUCTION_MIN reduced elements per output: the shared-memory tree."""
    n = reduce_axes.BLOCK_REDUCTION_MIN + 5
    x = random(rng, (3, n), dtype)
    x[2, 7] = np.nan
    for name, f in [("sum", lambda a: a.sum(axis=1)), ("mean", lambda a: a.mean(axis=-1)),
                    ("max", lambda a: a.max(axis=1)), ("min of a column", lambda a: a.min(0)),
                    ("sum of all", lambda a: a.sum())]:
        check(f, x, what=name)
    check(lambda a: a.T.sum(axis=0, keepdims=True), x, what="sum over the first axis")


def test_reduction_dtypes_and_ufunc_reduce(rng):
    x = random(rng, (4, 3), np.float32)
    for what, f in [("sum of bool", lambda a: (a > 0).sum(axis=0)),
                    ("sum of int32", lambda a: a.astype(np.int32).sum()),
                    ("mean of int64", lambda a: a.astype(np.int64).mean(axis=1)),
                    ("sum dtype=float64", lambda a: a.sum(axis=0, dtype=np.float64)),
                    ("max of int", lambda a: a.astype(np.int64).max(axis=0)),
                    ("np.add.reduce", lambda a: np.add.reduce(a)),
                    ("np.maximum.reduce axis=1", lambda a: np.maximum.reduce(a, axis=1)),
                    ("np.minimum.reduce keepdims", lambda a: np.minimum.reduce(a, keepdims=True))]:
        check(f, x, what=what)


def test_empty_reductions(dtype):
    x = np.zeros((0, 3), dtype)
    check(lambda a: a.sum(axis=0), x, what="sum over an empty axis")
    check(lambda a: a.sum(axis=1), x, what="sum into an empty result")
    with pytest.raises(ValueError, match="zero-size array to reduction operation maximum"):
        da.asdevice(x).max(axis=0)


# --------------------------------------------------------------------------------------------
# Indexing
# --------------------------------------------------------------------------------------------

# (key, a view of the buffer?) for an array of shape (3, 4, 5).
KEYS = [(1, True), (-1, True), ((2,), True), (slice(1, 3), True), ((1, slice(None)), True),
        ((1, 2), True), ((1, 2, 3), True), ((), True), (Ellipsis, True),
        ((1, slice(1, 3)), True), ((slice(None), 1), False), ((Ellipsis, 2), False),
        ((None, 1), True), ((slice(None), None, 0), False), (slice(None, None, 2), False),
        ((slice(None, None, -1), slice(1, None, 2)), False),
        ((1, Ellipsis, slice(3, 0, -2)), False), ((slice(5, 9),), True), ((slice(2, 1),), True)]


@pytest.mark.parametrize("key, view", KEYS, ids=[repr(k) for k, _ in KEYS])
def test_getitem_views_and_copies(rng, key, view):
    x = random(rng, (3, 4, 5), np.float32)
    base = da.asdevice(x)
    got = base[key]
    assert_same(got, x[key], f"a[{key!r}]")
    if got.size:
        assert shares_memory(got, base) == view, f"a[{key!r}] should be a " + (
            "view" if view else "copy")


def test_writes_through_views_change_the_base(rng):
    x = random(rng, (3, 4), np.float64)
    d = da.asdevice(x)
    d[1][...] = 0
    x[1][...] = 0
    d[2:] = np.arange(4.0)
    x[2:] = np.arange(4.0)
    d[0][1:3] += 10
    x[0][1:3] += 10
    assert_same(d, x, "writes through a[1], a[2:], a[0][1:3]")
    r = d.reshape(2, 6)
    r[1] = -1
    x.reshape(2, 6)[1] = -1
    assert_same(d, x, "write through a reshape")


def test_writes_into_selection_copies_raise_and_augmented_assignment_stores_back(rng):
    x = random(rng, (3, 4), np.float64)
    d = da.asdevice(x)
    column = d[:, 1]
    for write in (lambda: column.fill(0), lambda: column.__setitem__(Ellipsis, 0),
                  lambda: column.reshape(3, 1).fill(0), lambda: np.add(d[0], 1, out=column),
                  lambda: np.copyto(d.T, 0.0), lambda: da.add_at_along_axis(
                      d[:, ::2], np.zeros((3, 1), np.int64), 1.0, axis=1)):
        with pytest.raises(ValueError, match="copy of a strided selection"):
            write()
    d[:, 1] += 10
    x[:, 1] += 10
    d[::2, 1:3] *= 2
    x[::2, 1:3] *= 2
    assert_same(d, x, "a[:, 1] += 10 and a[::2, 1:3] *= 2")


SETS = [(1, 5.0), ((slice(None), 1), 2), ((Ellipsis, slice(None, None, 2)), "row"),
        ((slice(None, None, 2), slice(1, 3)), "column"), (slice(1, None), "host"),
        ((0, 0), "float64"), ((slice(None), None, 2), "row")]


@pytest.mark.parametrize("key, value", SETS, ids=[repr(k) for k, _ in SETS])
def test_setitem_broadcasts_and_casts(rng, dtype, key, value):
    x = random(rng, (3, 4), dtype)
    selection = x[key].shape
    values = {"row": lambda: random(rng, selection[-1:], dtype),
              "column": lambda: random(rng, selection[:1] + (1,), dtype),
              "host": lambda: random(rng, selection, np.float64),
              "float64": lambda: np.float64(7.25)}
    v = values[value]() if isinstance(value, str) else value
    d = da.asdevice(x)
    d[key] = da.asdevice(v) if isinstance(v, np.ndarray) and value != "host" else v
    x[key] = v
    assert_same(d, x, f"a[{key!r}] = {value}")


def test_setitem_casts_to_bool_and_int_and_checks_shapes(rng):
    x = random(rng, (2, 3), np.float64)
    b = da.full((2, 3), 0, bool)
    b[...] = da.asdevice(x)
    assert_same(b, x != 0, "bool <- float")
    i = da.full((2, 3), 0, np.int32)
    i[:, 1:] = da.asdevice(x[:, 1:] * 3)
    want = np.zeros((2, 3), np.int32)
    want[:, 1:] = x[:, 1:] * 3
    assert_same(i, want, "int32 <- float (truncated)")
    with pytest.raises(ValueError, match=r"could not broadcast input array from shape \(3,\) "
                                         r"into shape \(2, 2\)"):
        i[:, :2] = da.asdevice(np.ones(3))


def test_fancy_indexing_is_refused(rng):
    d = da.asdevice(random(rng, (3, 4)))
    for key in (np.array([0, 2]), [0, 1], np.array([True, False, True]), True,
                da.asdevice(np.array([1])), (slice(None), np.array([1, 2]))):
        with pytest.raises(TypeError, match="take_along_axis"):
            d[key]
        with pytest.raises(TypeError, match="fancy"):
            d[key] = 0.0
    with pytest.raises(IndexError, match="index 3 is out of bounds for axis 0 with size 3"):
        d[3]
    with pytest.raises(IndexError, match="too many indices"):
        d[0, 0, 0]


# --------------------------------------------------------------------------------------------
# The NumPy functions
# --------------------------------------------------------------------------------------------


def test_creation_functions(rng, dtype):
    x = random(rng, (2, 3), dtype)
    d = da.asdevice(x)
    for what, f in [("zeros_like", lambda a: np.zeros_like(a)),
                    ("ones_like dtype", lambda a: np.ones_like(a, dtype=np.int32)),
                    ("full_like", lambda a: np.full_like(a, 2.5)),
                    ("full_like shape", lambda a: np.full_like(a, 7, shape=(4,))),
                    ("zeros like=", lambda a: np.zeros((2, 2), dtype=np.float32, like=a)),
                    ("ones like=", lambda a: np.ones(3, like=a)),
                    ("full like=", lambda a: np.full((2,), 1.5, like=a)),
                    ("full int like=", lambda a: np.full((2,), 3, like=a))]:
        got = f(d)
        want = f(x) if "like=" not in what else f(np.empty(0))
        assert_same(got, want, what)
    host = random(rng, (3,), np.float32)
    for what, got, copied in [("asarray like=", np.asarray(host, like=d), True),
                              ("array like=", np.array(host, dtype=np.float64, like=d), True),
                              ("asarray of itself", np.asarray(d, like=d), False),
                              ("array of itself", np.array(d, like=d), True)]:
        want = host if "like=" in what else x
        assert_same(got, want.astype(got.dtype), what)
        assert (got is not d) == copied, what
    for copy in (True, False):
        got = np.array(d, ndmin=3, copy=copy, like=d)
        assert_same(got, np.array(x, ndmin=3), f"array ndmin=3 copy={copy}")
        assert shares_memory(got, d) != copy, f"array ndmin=3 copy={copy}"
    e = np.empty_like(d, shape=(4, 1))
    assert isinstance(e, DeviceArray) and e.shape == (4, 1) and e.dtype == dtype
    e = np.empty((2,), dtype=np.int64, like=d)
    assert isinstance(e, DeviceArray) and e.shape == (2,) and e.dtype == np.int64
    for what, got, want in [("da.full zeros", da.full((2, 1), 0, dtype), np.zeros((2, 1), dtype)),
                            ("da.full", da.full((2,), -3.5, dtype), np.full((2,), -3.5, dtype)),
                            ("da.full 0-d", da.full((), 4), np.full((), 4))]:
        assert_same(got, want, what)


SHAPE_FUNCTIONS = [
    ("broadcast_to", lambda a: np.broadcast_to(a[:, :1], (3, 2, 3))),
    ("broadcast_to same shape", lambda a: np.broadcast_to(a, a.shape)),
    ("expand_dims", lambda a: np.expand_dims(a, 1)),
    ("expand_dims tuple", lambda a: np.expand_dims(a, (0, -1))),
    ("squeeze", lambda a: np.squeeze(a[:, :1])),
    ("squeeze axis", lambda a: np.squeeze(a[None, :, :1], axis=0)),
    ("reshape", lambda a: np.reshape(a, (-1, 2))),
    ("method reshape", lambda a: a.reshape(2, 1, -1)),
    ("ravel", lambda a: a.ravel()), ("flatten", lambda a: a.flatten()),
    ("transpose", lambda a: np.transpose(a)), ("T", lambda a: a.T),
    ("transpose axes", lambda a: np.transpose(a[None], (2, 0, 1))),
    ("method transpose", lambda a: a[None].transpose(1, 2, 0)),
    ("swapaxes", lambda a: np.swapaxes(a, 0, -1)),
    ("moveaxis", lambda a: np.moveaxis(a.reshape(1, 3, 2), 0, -1)),
    ("moveaxis tuple", lambda a: np.moveaxis(a.reshape(1, 3, 2), (0, 1), (2, 0))),
    ("ascontiguousarray like=", lambda a: np.ascontiguousarray(a, like=a)),
    ("astype", lambda a: a.astype(np.float32)), ("copy", lambda a: a.copy()),
]


@pytest.mark.parametrize("name, f", SHAPE_FUNCTIONS, ids=[s[0] for s in SHAPE_FUNCTIONS])
def test_shape_functions(rng, name, f):
    check(f, random(rng, (2, 3)), what=name)


def test_reshape_and_ascontiguousarray_do_not_copy(rng):
    d = da.asdevice(random(rng, (2, 3)))
    assert np.ascontiguousarray(d, like=d) is d
    assert shares_memory(d.reshape(3, 2), d) and shares_memory(np.expand_dims(d, 0), d)
    assert not shares_memory(d.T, d) and not shares_memory(d.copy(), d)
    with pytest.raises(ValueError, match=r"cannot reshape array of size 6 into shape \(4,\)"):
        d.reshape(4)


def test_concatenate_and_stack(rng, dtype):
    a, b = random(rng, (2, 3), dtype), random(rng, (2, 2), dtype)
    c = random(rng, (1, 3), np.float32)
    check(lambda x, y: np.concatenate([x, y], axis=-1), a, b, what="concatenate axis=-1")
    check(lambda x, y: np.concatenate((x, y, x), axis=0), a, c, what="concatenate mixed dtypes")
    check(lambda x, y: np.concatenate([x, y], axis=None), a, b, what="concatenate axis=None")
    assert_same(np.concatenate([da.asdevice(a), b], axis=1), np.concatenate([a, b], axis=1),
                "concatenate with a host array")
    check(lambda x: np.concatenate([x, x[:, :0]], axis=1), a, what="with an empty piece")
    check(lambda x, y: np.stack([x, y]), a, a * 2, what="stack")
    check(lambda x, y: np.stack([x, y], axis=-1), a, a * 2, what="stack axis=-1")
    with pytest.raises(ValueError, match="along dimension 1, the array at index 0 has size 3"):
        np.concatenate([da.asdevice(a), da.asdevice(b)], axis=0)


def test_split_and_array_split(rng):
    x = random(rng, (4, 6))
    d = da.asdevice(x)
    for what, f in [("split sections", lambda a: np.split(a, 2)),
                    ("split indices axis=1", lambda a: np.split(a, [1, 4], axis=1)),
                    ("split axis=-1", lambda a: np.split(a, 3, axis=-1)),
                    ("array_split uneven", lambda a: np.array_split(a, 4, axis=1)),
                    ("array_split", lambda a: np.array_split(a, 3))]:
        got, want = f(d), f(x)
        assert len(got) == len(want), what
        for g, w in zip(got, want):
            assert_same(g, w, what)
    with pytest.raises(ValueError, match="equal division"):
        np.split(d, 4, axis=1)


def test_where_and_clip(rng, dtype):
    x, y = random(rng, (2, 3), dtype), random(rng, (3,), dtype)
    check(lambda a, b: np.where(a > b, a, b), x, y, what="where broadcast")
    check(lambda a: np.where(a > 0, a, 0.0), x, what="where with a scalar")
    check(lambda a, b: np.where(a > 0, 1, b), x, y, what="where scalar first")
    check(lambda a: np.where(a > 0, a.astype(np.int32), -1), x, what="where int")
    check(lambda a: np.clip(a, -0.5, 0.5), x, what="clip")
    check(lambda a: np.clip(a, None, 0.25), x, what="clip upper only")
    check(lambda a, b: np.clip(a, b, 1.0), x, y, what="clip array bound")


def test_take_along_axis(rng, dtype):
    x = random(rng, (2, 3, 4), dtype)
    index = rng.integers(-4, 4, size=(2, 3, 5))
    d = da.asdevice(x)
    assert_same(np.take_along_axis(d, index, axis=-1), np.take_along_axis(x, index, axis=-1),
                "host index, axis=-1, negative indices")
    index = rng.integers(0, 3, size=(2, 2, 1)).astype(np.int32)
    assert_same(np.take_along_axis(d, da.asdevice(index), axis=1),
                np.take_along_axis(x, index, axis=1), "device int32 index, broadcast")
    index = rng.integers(0, 24, size=(5,))
    assert_same(np.take_along_axis(d, index, axis=None), np.take_along_axis(x, index, None),
                "axis=None")
    with pytest.raises(IndexError, match="index 4 is out of bounds for axis 2 with size 4"):
        np.take_along_axis(d, np.full((2, 3, 1), 4), axis=2)


def test_add_at_along_axis_accumulates_duplicates(rng, dtype):
    target = random(rng, (2, 3, 4), dtype)
    for axis, index in [(-1, np.array([0, 2, 2, 0, 2, -1])), (1, np.array([1, 1, 0, 1]))]:
        shape = list(target.shape)
        shape[axis] = len(index)
        index = np.broadcast_to(
            np.expand_dims(index, tuple(k for k in range(3) if k != axis % 3)), shape).copy()
        values = random(rng, shape, dtype)
        d = da.asdevice(target)
        da.add_at_along_axis(d, index, da.asdevice(values), axis)
        assert_same(d, reference_add_at(target, index, values, axis), f"axis {axis}")
        d = da.asdevice(target)
        da.add_at_along_axis(d, da.asdevice(index), 0.5, axis)
        assert_same(d, reference_add_at(target, index, dtype.type(0.5), axis),
                    f"axis {axis}, device index, scalar values")


def test_copyto_result_type_shape_ndim_size(rng, dtype):
    d = da.full((2, 3), 0, dtype)
    src = random(rng, (3,), dtype)
    np.copyto(d, da.asdevice(src))
    assert_same(d, np.broadcast_to(src, (2, 3)), "copyto broadcast")
    np.copyto(d, np.ones((2, 3), np.float32))
    assert_same(d, np.ones((2, 3), dtype), "copyto from the host")
    assert np.result_type(d, 1.0) == dtype and np.result_type(d, np.float64) == np.float64
    assert np.shape(d) == (2, 3) and np.ndim(d) == 2 and np.size(d) == 6
    assert np.size(d, -1) == 3


# --------------------------------------------------------------------------------------------
# Matrix products
# --------------------------------------------------------------------------------------------

MATMULS = [((3, 5), (5, 4)), ((2, 3, 5), (2, 5, 4)), ((2, 1, 3, 5), (4, 5, 2)),
           ((3, 5), (2, 5, 1)), ((1, 2, 3), (3, 3, 2))]


@pytest.mark.parametrize("a_shape, b_shape", MATMULS, ids=[f"{a}@{b}" for a, b in MATMULS])
def test_matmul(rng, dtype, a_shape, b_shape):
    a, b = random(rng, a_shape, dtype), random(rng, b_shape, dtype)
    check(lambda x, y: x @ y, a, b, what="@")


def test_matmul_dtypes_host_operands_and_errors(rng):
    a, b = random(rng, (3, 4), np.float32), random(rng, (4, 2), np.float64)
    check(np.matmul, a, b, what="float32 @ float64")
    assert_same(a @ da.asdevice(b), a @ b, "ndarray @ DeviceArray")
    with pytest.raises(ValueError, match="size 2 is different from 4"):
        da.asdevice(a) @ da.asdevice(b.T)
    with pytest.raises(NotImplementedError, match="1-D"):
        da.asdevice(a) @ da.asdevice(np.ones(4))


# --------------------------------------------------------------------------------------------
# Attributes, host transfers and errors
# --------------------------------------------------------------------------------------------


def test_attributes(rng):
    x = random(rng, (2, 3, 4), np.float32)
    d = da.asdevice(x)
    assert (d.shape, d.dtype, d.ndim, d.size, d.nbytes, d.itemsize, len(d)) == (
        x.shape, x.dtype, x.ndim, x.size, x.nbytes, x.itemsize, len(x))
    assert d.strides == x.strides and d.flags.c_contiguous and d.flags.writeable
    assert d.flags["C_CONTIGUOUS"] and d.device.shape == x.shape
    assert "GPU" in repr(d) and "(2, 3, 4)" in repr(d) and "float32" in repr(d)
    assert [r.shape for r in d] == [(3, 4), (3, 4)]
    assert is_device(d) and not is_device(x)
    assert to_host(x) is x and np.array_equal(to_host(d), x)
    assert da.asdevice(d) is d and da.asdevice(d, np.float64).dtype == np.float64


def test_scalars_come_back_only_on_request(rng):
    d = da.asdevice(np.array([[2.5]], np.float32))
    assert d.item() == 2.5 and float(d) == 2.5 and int(d) == 2 and bool(d)
    assert not bool(da.full((), 0, bool))
    many = da.asdevice(random(rng, (2, 2)))
    assert isinstance(many[1, 1], DeviceArray) and many[1, 1].shape == ()
    with pytest.raises(ValueError, match="size 1"):
        many.item()
    with pytest.raises(ValueError, match="ambiguous"):
        bool(many)
    with pytest.raises(TypeError):
        float(many)


def test_implicit_host_copies_and_unimplemented_functions_raise(rng):
    d = da.asdevice(random(rng, (2, 3)))
    for convert in (np.asarray, np.array, np.ascontiguousarray,
                    lambda a: np.asarray(a, dtype=np.float32)):
        with pytest.raises(TypeError, match="lives on the GPU.*copy_to_host"):
            convert(d)
    for name, f in [("cumsum", lambda a: np.cumsum(a)), ("argsort", lambda a: np.argsort(a)),
                    ("sin", lambda a: np.sin(a)), ("add.accumulate", np.add.accumulate)]:
        with pytest.raises(TypeError, match=rf"np\.{name} is not implemented for DeviceArray"):
            f(d)
    with pytest.raises(TypeError, match="one argument"):
        np.where(d > 0)


def test_broadcast_and_axis_errors_name_the_shapes(rng):
    a, b = da.asdevice(random(rng, (2, 3))), da.asdevice(random(rng, (4,)))
    with pytest.raises(ValueError, match=r"could not be broadcast together with shapes "
                                         r"\(2,3\) \(4,\)"):
        a + b
    with pytest.raises(np.exceptions.AxisError, match="axis 2 is out of bounds for array of "
                                                      "dimension 2"):
        a.sum(axis=2)
    with pytest.raises(ValueError, match="cannot broadcast an array of shape"):
        np.broadcast_to(a, (3, 3))


def test_wrapping_and_supported_dtypes():
    with pytest.raises(TypeError, match="asdevice"):
        DeviceArray(np.zeros(3))
    strided = launch.to_device(np.arange(12.0).reshape(3, 4))[:, ::2]
    with pytest.raises(TypeError, match="C-contiguous"):
        DeviceArray(strided)
    assert_same(da.asdevice(strided), np.arange(12.0).reshape(3, 4)[:, ::2],
                "asdevice of a strided numba device array")
    with pytest.raises(TypeError, match="float16"):
        da.asdevice(np.zeros(2, np.float16))
    with pytest.raises(TypeError, match="float16"):
        np.exp(da.full(2, 0, bool))        # NumPy would compute in float16
    with pytest.raises(ValueError, match="at most 8 dimensions"):
        da.full((1,) * 9, 0.0)


def test_int_and_bool_arrays(rng):
    x = rng.integers(-5, 5, size=(3, 4))
    for what, f in [("astype int32", lambda a: a.astype(np.int32)),
                    ("int + int", lambda a: a + a[0]), ("int * 2", lambda a: a * 2),
                    ("int compare", lambda a: a >= 0), ("abs", lambda a: np.abs(a)),
                    ("sign", lambda a: np.sign(a)), ("maximum", lambda a: np.maximum(a, 1)),
                    ("mask and", lambda a: np.logical_and(a > 0, a < 3)),
                    ("mask or", lambda a: np.logical_or(a > 3, a < -3)),
                    ("not", lambda a: np.logical_not(a > 0)), ("~", lambda a: ~(a > 0)),
                    ("&", lambda a: (a > 0) & (a < 3)), ("|", lambda a: (a > 3) | (a < -3)),
                    ("& True", lambda a: True & (a > 0)),
                    ("float from int", lambda a: a.astype(np.float32) / 2),
                    ("int from float", lambda a: (a / 3).astype(np.int64))]:
        check(f, x, what=what)
    with pytest.raises(TypeError, match="bool DeviceArrays only"):
        ~da.asdevice(x)


def test_empty_arrays_launch_nothing():
    x = np.zeros((0, 3), np.float32)
    for what, f in [("exp", np.exp), ("add", lambda a: a + a[:, :1]),
                    ("getitem", lambda a: a[:, 1:]), ("transpose", lambda a: a.T),
                    ("concatenate", lambda a: np.concatenate([a, a])),
                    ("where", lambda a: np.where(a > 0, a, 1.0)),
                    ("take", lambda a: np.take_along_axis(a, np.zeros((0, 2), int), axis=1))]:
        check(f, x, what=what)
    d = da.asdevice(x)
    d[...] = 1.0
    d.fill(2.0)
    assert d.copy_to_host().shape == (0, 3)


def test_results_do_not_depend_on_the_launch_size(rng, monkeypatch):
    """Grid-stride loops: the same results with several blocks as with the one the simulator
    launches by default."""
    x = random(rng, (3, 40))
    monkeypatch.setattr(launch, "MAX_BLOCKS", 3)
    check(lambda a: np.exp(a) + a[0], x, what="elementwise, 3 blocks")
    check(lambda a: a.sum(axis=1), x, what="block reduction, 3 blocks")
    check(lambda a: a.max(axis=0), x, what="thread reduction, 3 blocks")
    check(lambda a: a.T[::2], x, what="strided copy, 3 blocks")
