"""Read PyTorch ``.pth`` state-dict files into NumPy arrays, without torch and without running
any pickled code.

Two container formats exist:

* **zip** (``torch.save`` since PyTorch 1.6): a zip archive whose entries all sit under one
  folder ``<archive>/`` (any name):
      <archive>/data.pkl        the pickled object (usually an OrderedDict name -> tensor)
      <archive>/data/<key>      one raw storage per key: numel elements, little-endian
      <archive>/byteorder       optional, "little" or "big" (absent: little)
      <archive>/version         the format version (a decimal number)
* **legacy** (before 1.6): five pickles one after another on the same stream: the magic number
  0x1950a86a20f9469cfc6c, the protocol version 1001, a system-info dict, the object, and the list
  of storage keys; then, for each key in that order, an int64 little-endian element count and
  the raw little-endian elements.

Inside ``data.pkl`` a tensor is ``torch._utils._rebuild_tensor_v2(storage, storage_offset, size,
stride, requires_grad, backward_hooks[, metadata])`` whose storage is a *persistent id*:
    zip:    ('storage', <torch.FloatStorage>, key, location, numel)
    legacy: ('storage', <torch.FloatStorage>, key, location, numel, view_metadata)
The tensor is element [i_0, ..., i_{d-1}] = storage[offset + sum_j i_j * stride_j]; here that is
``numpy.lib.stride_tricks.as_strided`` over the storage (after checking that every index stays
inside it), then a copy, so any strides and offsets (views, transposes) come out right.

Safety: ``RestrictedUnpickler.find_class`` resolves only the names in ``ALLOWED_GLOBALS``
(tensor and parameter rebuilders, the storage types, ``collections.OrderedDict``) to functions
of this module; any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...)
raises ``UnsafePickleError`` naming it, before anything is called. Persistent ids other than
storages are refused the same way.
"""
from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch storage class name -> element type (little-endian on disk)
STORAGE_DTYPES = {
    "DoubleStorage": "<f8", "FloatStorage": "<f4", "HalfStorage": "<f2",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}


class PthError(ValueError):
    """The file is not a readable PyTorch checkpoint (truncated, wrong layout, bad sizes)."""


class UnsafePickleError(PthError):
    """The pickle asks for something other than tensors and dicts; it was not executed."""


class _StorageType:
    """Stands for torch.<Name>Storage inside the pickle; only persistent ids may use it."""

    def __init__(self, name):
        self.name, self.dtype = name, np.dtype(STORAGE_DTYPES[name])

    def __call__(self, *args, **kwargs):
        raise UnsafePickleError(f"the pickle calls torch.{self.name} directly; a state dict only "
                                f"names storage types inside persistent ids")

    def __repr__(self):
        return f"torch.{self.name}"


class _Storage:
    """A flat storage: ``array`` (1-D, native byte order) of ``numel`` elements."""

    def __init__(self, array):
        self.array = array


def _check_index_tuple(name, value):
    if not isinstance(value, tuple) or not all(isinstance(v, int) and not isinstance(v, bool)
                                               for v in value):
        raise PthError(f"tensor {name} must be a tuple of integers, got {value!r}")


def rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False,
                   backward_hooks=None, metadata=None):
    """torch._utils._rebuild_tensor_v2 -> a contiguous numpy array (a copy)."""
    if not isinstance(storage, _Storage):
        raise PthError(f"a tensor's storage must come from a persistent id, got "
                       f"{type(storage).__name__}")
    _check_index_tuple("size", size)
    _check_index_tuple("stride", stride)
    if len(size) != len(stride):
        raise PthError(f"tensor size {size} and stride {stride} have different lengths")
    if not isinstance(storage_offset, int) or storage_offset < 0 or min(size + stride,
                                                                         default=0) < 0:
        raise PthError(f"negative offset, size or stride in a tensor (offset {storage_offset}, "
                       f"size {size}, stride {stride})")
    flat = storage.array
    if 0 in size:
        return np.empty(size, dtype=flat.dtype)
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= flat.size:
        raise PthError(f"tensor of size {size}, stride {stride}, offset {storage_offset} reaches "
                       f"element {last} of a storage holding {flat.size}: the file is corrupt")
    count = int(np.prod(size, dtype=object))
    if count > 16 * flat.size + 2 ** 20:      # stride-0 expansions that would exhaust memory
        raise PthError(f"tensor of size {size} repeats its {flat.size}-element storage "
                       f"{count / flat.size:.3g} times; refusing to materialise it")
    base = flat[storage_offset:]
    view = np.lib.stride_tricks.as_strided(
        base, shape=size, strides=[s * flat.itemsize for s in stride], writeable=False)
    return np.array(view, order="C", copy=True)


def rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    """torch._utils._rebuild_parameter(_with_state): a Parameter is its data."""
    if not isinstance(data, np.ndarray):
        raise PthError(f"a parameter must wrap a tensor, got {type(data).__name__}")
    return data


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a state dict; ``load_storage(key, dtype, numel, view)`` supplies storages.

    find_class resolves only ``ALLOWED_GLOBALS``; persistent_load accepts only storage ids.
    """

    def __init__(self, file, load_storage):
        super().__init__(file, encoding="utf-8")
        self._load_storage = load_storage

    def find_class(self, module, name):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused to load the global '{module}.{name}': this reader rebuilds only "
                f"tensors and dicts of a state dict, and never runs other pickled code. If the "
                f"file is a whole pickled model rather than a state_dict, save "
                f"model.state_dict() instead.") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] in ("storage", b"storage")):
            raise UnsafePickleError(f"refused the persistent id {pid!r:.200}: only tensor "
                                    f"storages ('storage', type, key, location, numel) are read")
        storage_type, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"persistent id names the storage type {storage_type!r}; "
                                    f"readable types: {sorted(STORAGE_DTYPES)}")
        if isinstance(key, bytes):
            key = key.decode("ascii")
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise PthError(f"malformed storage id {pid!r:.200}")
        return self._load_storage(key, storage_type.dtype, numel, view)


# --- the two containers ------------------------------------------------------------------------


def _read_zip(path, zf: zipfile.ZipFile):
    names = zf.namelist()
    pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise PthError(f"{path}: expected one '<archive>/data.pkl' in the zip, found {pickles}; "
                       f"this is not a torch.save file")
    prefix = pickles[0][:-len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in names:
        byteorder = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise PthError(f"{path}: byteorder record says {byteorder!r}, expected little or big")
    cache = {}

    def load_storage(key, dtype, numel, view):
        if view is not None:
            raise PthError(f"{path}: storage view metadata {view!r} in a zip-format file")
        if key not in cache:
            record = prefix + "data/" + key
            try:
                info = zf.getinfo(record)
            except KeyError:
                raise PthError(f"{path}: the pickle refers to storage {record}, which is not in "
                               f"the archive (truncated or edited file)") from None
            nbytes = numel * dtype.itemsize
            if info.file_size != nbytes:
                raise PthError(f"{path}: storage {record} holds {info.file_size} bytes, but "
                               f"{numel} elements of {dtype} need {nbytes}")
            disk = dtype.newbyteorder("<" if byteorder == "little" else ">")
            flat = np.frombuffer(zf.read(record), dtype=disk, count=numel)
            cache[key] = (_Storage(flat.astype(dtype.newbyteorder("="))), dtype)
        storage, stored_dtype = cache[key]
        if stored_dtype != dtype:
            raise PthError(f"{path}: storage {key} is used both as {stored_dtype} and {dtype}")
        return storage

    with zf.open(pickles[0]) as f:
        return RestrictedUnpickler(f, load_storage).load()


def _read_legacy(path, f):
    def plain():
        return RestrictedUnpickler(f, _no_storage).load()

    try:
        magic = plain()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, IndexError) as err:
        raise PthError(f"{path} is neither a zip-format nor a legacy PyTorch file ({err})") from err
    if magic != LEGACY_MAGIC:
        raise PthError(f"{path}: not a PyTorch file (no zip archive and no legacy magic number)")
    version = plain()
    if version != LEGACY_PROTOCOL:
        raise PthError(f"{path}: legacy protocol version {version!r}, only {LEGACY_PROTOCOL} "
                       f"is readable")
    plain()                                              # system info: byte order, type sizes
    pending = {}                                         # key -> (dtype, numel, storage)
    views = []                                           # (key, offset, size, storage)

    def load_storage(key, dtype, numel, view):
        entry = pending.setdefault(key, (dtype, numel, _Storage(None)))
        if entry[0] != dtype or entry[1] != numel:
            raise PthError(f"{path}: storage {key} declared twice with different types/sizes")
        if view is None:
            return entry[2]
        if not (isinstance(view, tuple) and len(view) == 3
                and all(isinstance(v, int) for v in view[1:])):
            raise PthError(f"{path}: malformed storage view {view!r:.200}")
        _view_key, offset, size = view
        if offset < 0 or size < 0 or offset + size > numel:
            raise PthError(f"{path}: storage view [{offset}, {offset + size}) outside storage "
                           f"{key} of {numel} elements")
        part = _Storage(None)
        views.append((key, offset, size, part))
        return part

    obj = _LegacyUnpickler(f, load_storage).load()
    keys = plain()
    if not isinstance(keys, list) or set(keys) != set(pending):
        raise PthError(f"{path}: the storage key list does not match the storages the object uses")
    for key in keys:
        dtype, numel, storage = pending[key]
        header = f.read(8)
        count = int.from_bytes(header, "little", signed=True) if len(header) == 8 else -1
        if count != numel:
            raise PthError(f"{path}: storage {key} should hold {numel} elements, the file says "
                           f"{count} (truncated file?)")
        raw = f.read(numel * dtype.itemsize)
        if len(raw) != numel * dtype.itemsize:
            raise PthError(f"{path}: storage {key} is truncated")
        storage.array = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
    for key, offset, size, part in views:
        part.array = pending[key][2].array[offset:offset + size]
    return _resolve(obj)


def _no_storage(key, dtype, numel, view):
    raise PthError("a storage appears outside the object pickle of a legacy file")


class _DeferredTensor:
    """A tensor of a legacy file, whose storage bytes come only after the object pickle:
    rebuilt by ``_resolve`` once they are read."""

    def __init__(self, args):
        self.args = args


def _resolve(obj):
    if isinstance(obj, _DeferredTensor):
        return rebuild_tensor(*obj.args)
    if isinstance(obj, dict):
        out = collections.OrderedDict() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _resolve(v)
        return out
    if isinstance(obj, list):
        return [_resolve(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve(v) for v in obj)
    return obj


def _deferring_rebuild(storage, *args):
    if isinstance(storage, _Storage) and storage.array is None:
        return _DeferredTensor((storage, *args))
    return rebuild_tensor(storage, *args)


def _deferring_parameter(data, *args):
    return data if isinstance(data, _DeferredTensor) else rebuild_parameter(data, *args)


class _LegacyUnpickler(RestrictedUnpickler):
    """The object pickle of a legacy file: tensors wait for their storages."""

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _deferring_rebuild
        if (module, name) in (("torch._utils", "_rebuild_parameter"),
                              ("torch._utils", "_rebuild_parameter_with_state")):
            return _deferring_parameter
        return super().find_class(module, name)


# --- public ------------------------------------------------------------------------------------


def read_pth(path):
    """Load a ``torch.save`` file (zip or legacy format) -> the pickled object with every tensor
    as a numpy array (native byte order, C-contiguous, the tensor's dtype). Nothing but tensors,
    dicts, lists, tuples and plain values can come out; see the module docstring."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no PyTorch file at {path}")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                return _read_zip(path, zf)
        except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError) as err:
            raise PthError(f"{path}: cannot read the zip archive ({err}); the file may be "
                           f"truncated") from err
    with open(path, "rb") as f:
        return _read_legacy(path, f)


def read_state_dict(path):
    """``read_pth`` for state dicts: -> dict name -> numpy array. Accepts a bare state dict, or
    a dict holding one under 'state_dict' / 'model' (common checkpoint wrappers); strips a
    'module.' prefix that nn.DataParallel adds to every name."""
    obj = read_pth(path)
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise PthError(f"{path} holds a {type(obj).__name__}, not a state dict (name -> tensor)")
    state = {}
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, np.ndarray):
            raise PthError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor; "
                           f"expected a flat state dict")
        state[name] = value
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state
