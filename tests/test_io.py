"""snnvae.io reads PyTorch .pth files without torch and never runs pickled code.

The small files here are written by hand: pickle opcodes (protocol 2) with the same globals and
persistent ids that torch.save emits, inside the zip layout (<archive>/data.pkl,
<archive>/data/<key>) or the legacy stream of five pickles plus raw storages.
"""
from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from snnvae.io import PthError, UnsafePickleError, read_pth, read_state_dict
from conftest import shared_dir

# --- a tiny pickle writer ----------------------------------------------------------------------


class Global:
    def __init__(self, module, name):
        self.module, self.name = module, name


class Call:
    """REDUCE: func(*args), func a Global."""

    def __init__(self, func, *args):
        self.func, self.args = func, args


class PersId:
    def __init__(self, pid):
        self.pid = pid


class Tensor:
    """What torch pickles for a tensor: _rebuild_tensor_v2(storage, offset, size, stride, ...)."""

    def __init__(self, storage_type, key, numel, offset, size, stride, location="cpu", view=None):
        pid = ("storage", Global("torch", storage_type), key, location, numel)
        if view is not None or location == "legacy":
            pid = ("storage", Global("torch", storage_type), key, "cpu", numel, view)
        self.value = Call(Global("torch._utils", "_rebuild_tensor_v2"), PersId(pid), offset,
                          tuple(size), tuple(stride), False,
                          Call(Global("collections", "OrderedDict")))


def dumps(obj) -> bytes:
    out = bytearray(b"\x80\x02")

    def w(o):
        if isinstance(o, Tensor):
            w(o.value)
        elif isinstance(o, Global):
            out.extend(b"c" + o.module.encode() + b"\n" + o.name.encode() + b"\n")
        elif isinstance(o, Call):
            w(o.func)
            w(tuple(o.args))
            out.extend(b"R")
        elif isinstance(o, PersId):
            w(o.pid)
            out.extend(b"Q")
        elif o is None:
            out.extend(b"N")
        elif o is True or o is False:
            out.extend(b"\x88" if o else b"\x89")
        elif isinstance(o, int) and -2**31 <= o < 2**31:
            out.extend(b"J" + struct.pack("<i", o))
        elif isinstance(o, int):
            raw = o.to_bytes((o.bit_length() + 8) // 8, "little", signed=True)
            out.extend(b"\x8a" + bytes([len(raw)]) + raw)
        elif isinstance(o, str):
            raw = o.encode()
            out.extend(b"X" + struct.pack("<I", len(raw)) + raw)
        elif isinstance(o, tuple):
            out.extend(b"(")
            for v in o:
                w(v)
            out.extend(b"t")
        elif isinstance(o, list):
            out.extend(b"]")
            for v in o:
                w(v)
                out.extend(b"a")
        elif isinstance(o, OrderedDict):
            w(Call(Global("collections", "OrderedDict")))
            for k, v in o.items():
                w(k)
                w(v)
                out.extend(b"s")
        elif isinstance(o, dict):
            out.extend(b"}")
            for k, v in o.items():
                w(k)
                w(v)
                out.extend(b"s")
        else:
            raise TypeError(type(o))

    w(obj)
    return bytes(out + b".")


DTYPE_OF = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "LongStorage": "<i8"}


def write_zip(path, obj, storages, archive="archive", byteorder=None):
    """storages: key -> 1-D array (written little-endian unless byteorder == 'big')."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{archive}/data.pkl", dumps(obj))
        if byteorder:
            zf.writestr(f"{archive}/byteorder", byteorder)
        for key, arr in storages.items():
            order = ">" if byteorder == "big" else "<"
            zf.writestr(f"{archive}/data/{key}", arr.astype(arr.dtype.newbyteorder(order)).tobytes())
        zf.writestr(f"{archive}/version", "3\n")
    return path


def write_legacy(path, obj, storages):
    stream = dumps(0x1950A86A20F9469CFC6C) + dumps(1001) + dumps(
        {"protocol_version": 1001, "little_endian": True}) + dumps(obj) + dumps(list(storages))
    for arr in storages.values():
        stream += struct.pack("<q", arr.size) + arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    path.write_bytes(stream)
    return path


def strided_by_hand(flat, offset, size, stride):
    out = np.empty(size, flat.dtype)
    for idx in np.ndindex(*size):
        out[idx] = flat[offset + sum(i * s for i, s in zip(idx, stride))]
    return out


# --- the zip format ----------------------------------------------------------------------------


def test_contiguous_tensors_of_each_dtype(tmp_path):
    rng = np.random.default_rng(0)
    f32 = rng.normal(size=6).astype(np.float32)
    f64 = rng.normal(size=4)
    i64 = np.array([3, -2**40, 7], np.int64)
    obj = OrderedDict([
        ("w", Tensor("FloatStorage", "0", 6, 0, (2, 3), (3, 1))),
        ("d", Tensor("DoubleStorage", "1", 4, 0, (4,), (1,))),
        ("n", Tensor("LongStorage", "2", 3, 2, (), ())),           # a 0-d tensor at offset 2
        ("e", Tensor("FloatStorage", "0", 6, 0, (0, 3), (3, 1))),  # empty
    ])
    state = read_state_dict(write_zip(tmp_path / "a.pth", obj, {"0": f32, "1": f64, "2": i64}))
    assert list(state) == ["w", "d", "n", "e"]
    assert state["w"].dtype == np.float32 and np.array_equal(state["w"], f32.reshape(2, 3))
    assert state["d"].dtype == np.float64 and np.array_equal(state["d"], f64)
    assert state["n"].dtype == np.int64 and state["n"].shape == () and state["n"] == 7
    assert state["e"].shape == (0, 3)


@pytest.mark.parametrize("offset,size,stride", [
    (0, (4, 3), (1, 4)),          # a transpose of a (3, 4) tensor
    (5, (2, 3), (8, 2)),          # every other column, from an offset
    (1, (2, 2, 3), (12, 1, 4)),   # permuted axes
    (7, (3, 2), (0, 1)),          # expand: stride 0 repeats a row
])
def test_strides_and_offsets(tmp_path, offset, size, stride):
    flat = np.arange(24, dtype=np.float64) * 1.5 - 3
    obj = OrderedDict(t=Tensor("DoubleStorage", "k", 24, offset, size, stride))
    got = read_state_dict(write_zip(tmp_path / "s.pth", obj, {"k": flat}))["t"]
    assert got.shape == size and got.flags.c_contiguous
    np.testing.assert_array_equal(got, strided_by_hand(flat, offset, size, stride))


def test_tensors_sharing_one_storage_and_big_endian_files(tmp_path):
    flat = np.arange(10, dtype=np.float32)
    obj = OrderedDict(a=Tensor("FloatStorage", "s", 10, 0, (5,), (1,)),
                      b=Tensor("FloatStorage", "s", 10, 5, (5,), (1,)))
    for order in (None, "little", "big"):
        state = read_state_dict(write_zip(tmp_path / f"{order}.pth", obj, {"s": flat},
                                          archive="my_model", byteorder=order))
        np.testing.assert_array_equal(state["a"], flat[:5])
        np.testing.assert_array_equal(state["b"], flat[5:])
        assert state["a"].dtype.isnative


def test_wrappers_and_data_parallel_prefix(tmp_path):
    flat = np.ones(2, np.float32)
    inner = OrderedDict([("module.x", Tensor("FloatStorage", "0", 2, 0, (2,), (1,)))])
    path = write_zip(tmp_path / "w.pth", {"state_dict": inner, "epoch": 3}, {"0": flat})
    assert list(read_state_dict(path)) == ["x"]
    assert read_pth(path)["epoch"] == 3


def test_out_of_bounds_strides_and_size_mismatches_are_refused(tmp_path):
    flat = np.zeros(6, np.float32)
    bad = OrderedDict(t=Tensor("FloatStorage", "0", 6, 2, (2, 3), (3, 1)))   # reaches element 7
    with pytest.raises(PthError, match="reaches element 7"):
        read_pth(write_zip(tmp_path / "b.pth", bad, {"0": flat}))
    short = OrderedDict(t=Tensor("FloatStorage", "0", 8, 0, (8,), (1,)))     # declares 8
    with pytest.raises(PthError, match="holds 24 bytes"):
        read_pth(write_zip(tmp_path / "c.pth", short, {"0": flat}))
    huge = OrderedDict(t=Tensor("FloatStorage", "0", 6, 0, (10**6, 10**6), (0, 0)))
    with pytest.raises(PthError, match="refusing to materialise"):
        read_pth(write_zip(tmp_path / "h.pth", huge, {"0": flat}))
    missing = OrderedDict(t=Tensor("FloatStorage", "9", 6, 0, (6,), (1,)))
    with pytest.raises(PthError, match="not in the archive"):
        read_pth(write_zip(tmp_path / "d.pth", missing, {"0": flat}))
    with pytest.raises(PthError, match="not a state dict"):
        read_state_dict(write_zip(tmp_path / "e.pth", [1, 2], {}))


# --- the legacy format -------------------------------------------------------------------------


def test_legacy_format(tmp_path):
    flat = np.arange(12, dtype=np.float32)
    longs = np.array([5, 6], np.int64)
    obj = OrderedDict([
        ("w", Tensor("FloatStorage", "a", 12, 2, (3, 2), (1, 3), location="legacy")),
        ("v", Tensor("FloatStorage", "a", 12, 0, (2,), (1,), view=("a_view", 4, 4))),
        ("n", Tensor("LongStorage", "b", 2, 1, (), (), location="legacy")),
    ])
    state = read_state_dict(write_legacy(tmp_path / "old.pth", obj, {"a": flat, "b": longs}))
    np.testing.assert_array_equal(state["w"], strided_by_hand(flat, 2, (3, 2), (1, 3)))
    np.testing.assert_array_equal(state["v"], flat[4:6])            # a view starting at 4
    assert state["n"] == 6
    raw = (tmp_path / "old.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(raw[:-5])
    with pytest.raises(PthError, match="truncated"):
        read_pth(tmp_path / "cut.pth")
    (tmp_path / "junk.pth").write_bytes(b"hello, not a checkpoint")
    with pytest.raises(PthError):
        read_pth(tmp_path / "junk.pth")


# --- malicious pickles -------------------------------------------------------------------------


@pytest.mark.parametrize("module,name,args", [
    ("os", "system", ("touch {marker}",)),
    ("posix", "system", ("touch {marker}",)),
    ("builtins", "eval", ("open({marker!r}, 'w').close()",)),
    ("builtins", "exec", ("open({marker!r}, 'w').close()",)),
    ("subprocess", "Popen", (("touch", "{marker}"),)),
    ("torch", "load", ("{marker}",)),
])
@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_malicious_globals_are_refused_and_never_run(tmp_path, module, name, args, container):
    marker = str(tmp_path / "pwned")
    args = tuple(tuple(a.format(marker=marker) for a in x) if isinstance(x, tuple)
                 else x.format(marker=marker) for x in args)
    payload = OrderedDict(x=Call(Global(module, name), *args))
    path = tmp_path / "evil.pth"
    if container == "zip":
        write_zip(path, payload, {})
    else:
        write_legacy(path, payload, {})
    with pytest.raises(UnsafePickleError, match=f"'{module}.{name}'"):
        read_pth(path)
    assert not (tmp_path / "pwned").exists()


class _Exploit:
    """The classic payload, made by Python's own pickler (GLOBAL at protocol 2, STACK_GLOBAL at
    protocol 4): unpickling would run os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [2, 4])
def test_payloads_from_the_standard_pickler_are_refused(tmp_path, protocol):
    import pickle
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": _Exploit(marker)}, protocol=protocol))
    with pytest.raises(UnsafePickleError, match="system'"):
        read_pth(path)
    path.write_bytes(pickle.dumps(_Exploit(marker), protocol=protocol))     # legacy-style stream
    with pytest.raises(UnsafePickleError, match="system'"):
        read_pth(path)
    assert not marker.exists()


def test_malicious_persistent_ids_and_storage_calls_are_refused(tmp_path):
    pid = OrderedDict(x=PersId(("module", "os", "system")))
    with pytest.raises(UnsafePickleError, match="persistent id"):
        read_pth(write_zip(tmp_path / "p.pth", pid, {}))
    call = OrderedDict(x=Call(Global("torch", "FloatStorage"), 10))
    with pytest.raises(UnsafePickleError, match="FloatStorage"):
        read_pth(write_zip(tmp_path / "c.pth", call, {}))
    fake = OrderedDict(x=PersId(("storage", Global("torch", "Tensor"), "0", "cpu", 1)))
    with pytest.raises(UnsafePickleError, match="'torch.Tensor'"):
        read_pth(write_zip(tmp_path / "f.pth", fake, {}))


# --- the real files ----------------------------------------------------------------------------


def ref_file(name):
    base = shared_dir()
    path = None if base is None else base / "ref" / name
    if path is None or not path.exists():
        pytest.skip(f"{name} not found under $SNNVAE_SHARED/ref or ../shared/ref")
    return path


@pytest.mark.parametrize("name", ["fsvae_ae_mnist_64.pth", "fsvae_ae_fashion_64.pth"])
def test_real_feature_autoencoder_files(name):
    state = read_state_dict(ref_file(name))
    assert len(state) == 62
    shapes = {"encoder.0.0.weight": (32, 1, 3, 3), "encoder.3.0.weight": (256, 128, 3, 3),
              "encoder.3.1.running_var": (256,), "latent_layer.weight": (64, 1024),
              "decoder_input.weight": (1024, 64), "final_layer.3.weight": (32, 1, 3, 3)}
    for key, shape in shapes.items():
        assert state[key].shape == shape and state[key].dtype == np.float32, key
        assert np.all(np.isfinite(state[key])), key
    assert state["encoder.0.1.num_batches_tracked"].dtype == np.int64
    assert state["encoder.0.1.num_batches_tracked"] > 0
    assert np.all(state["encoder.2.1.running_var"] > 0)
    # every tensor is one whole storage here: its bytes must be one of the raw records
    with zipfile.ZipFile(ref_file(name)) as zf:
        records = [zf.read(n) for n in zf.namelist() if n.startswith("archive/data/")]
    assert len(records) == len(state)
    assert all(v.astype(v.dtype.newbyteorder("<")).tobytes() in records for v in state.values())


def test_real_mnist_file_is_the_one_the_golden_features_came_from(golden):
    meta = json.loads(str(golden("ae_features")["_meta"]))
    digest = hashlib.sha256(ref_file("fsvae_ae_mnist_64.pth").read_bytes()).hexdigest()
    assert digest == meta["ae_weights_sha256"]


# --- official names -> ours --------------------------------------------------------------------


def test_official_fsvae_pth_loads_into_our_model(tmp_path, golden):
    """The small official FSVAE's state dict, written as a torch zip file (Conv3d kernels with
    their time axis, the coef buffer), loads into our FSVAE with the same weights as the
    in-memory conversion the golden model tests use."""
    from snnvae.io.official import load_official_fsvae
    from snnvae.models import FSVAEConfig
    from snnvae.models.official import convert_official_fsvae_state
    w = golden("fsvae_small_weights")
    state = {n: w["q." + n].astype(np.float64) * 2.0 ** int(w["e." + n]) for n in w["param_names"]}
    state.update({n: w["buf." + n] for n in w["buffer_names"]})
    assert any(v.ndim == 5 for v in state.values())
    path = write_state_dict(tmp_path / "fsvae.pth", state)
    config = FSVAEConfig(latent_dim=16, k=4, timesteps=6)
    model = load_official_fsvae(path, config, dtype=np.float64)
    expected = convert_official_fsvae_state(state, 6)
    ours = model.state_dict()
    assert set(ours) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(ours[name], value, err_msg=name)
    with pytest.raises(ValueError, match="time steps"):
        load_official_fsvae(path, config.replace(timesteps=8))


def write_state_dict(path, state):
    """A torch zip file holding ``state`` (name -> float64/int64 array) with a DataParallel
    prefix, as torch.save would write it."""
    obj, storages = OrderedDict(), {}
    for i, (name, value) in enumerate(state.items()):
        value = np.asarray(value)
        kind = "LongStorage" if value.dtype == np.int64 else "DoubleStorage"
        strides = tuple(s // value.itemsize for s in value.strides)
        obj["module." + name] = Tensor(kind, str(i), value.size, 0, value.shape, strides)
        storages[str(i)] = np.ascontiguousarray(value).ravel()
    return write_zip(path, obj, storages)


@pytest.mark.parametrize("kind", ["esvae", "ann"])
def test_official_esvae_and_ann_pth_load_into_our_models(tmp_path, kind):
    """A state dict under our (the official) names, ESVAE's spiking kernels given the Conv3d
    time axis, loads back exactly; a foreign name is refused naming it."""
    from snnvae.io.official import load_official_ann_vae, load_official_esvae
    from snnvae.models import ANNVAEConfig, ESVAEConfig, build_model
    if kind == "esvae":
        config, name, load = ESVAEConfig(latent_dim=8, timesteps=3), "ESVAE", load_official_esvae
    else:
        config, name, load = ANNVAEConfig(latent_dim=8, kl_weight=0.1), "ANNVAE", load_official_ann_vae
    config = config.replace(hidden_channels=(4, 8, 8, 16))
    source = build_model(name, config.to_dict(), seed=5, dtype=np.float64)
    state = {n: v.astype(np.int64) if v.dtype.kind == "i" else v.astype(np.float64)
             for n, v in source.state_dict().items()}
    official = dict(state)
    if kind == "esvae":
        official = {n: v[..., None] if n.endswith(".weight") and v.ndim == 4 else v
                    for n, v in state.items()}
    model = load(write_state_dict(tmp_path / "model.pth", official), config, dtype=np.float64)
    ours = model.state_dict()
    assert set(ours) == set(state)
    for n, value in state.items():
        np.testing.assert_array_equal(ours[n], value, err_msg=n)
    official["unexpected.weight"] = np.zeros(3)
    with pytest.raises(KeyError, match="unexpected.weight"):
        load(write_state_dict(tmp_path / "bad.pth", official), config, dtype=np.float64)
