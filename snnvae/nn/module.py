"""Module, Parameter and Sequential: containers that own parameters, buffers and sub-modules.

Attributes are registered by type when they are set: a ``Parameter`` becomes a parameter, a
``Module`` a sub-module, and ``register_buffer`` adds a named array that is saved in the
state dict but not trained (e.g. tdBN's running statistics). Names are dotted paths
("encoder.0.bn.weight"), in the order the attributes were set.

``to_device("cuda")`` moves the parameters and floating buffers into GPU memory (DeviceArrays,
see ``snnvae.device``), where every op of a step then runs; ``to_device("cpu")`` brings them
back. State dicts are always host (NumPy) arrays, so checkpoints do not depend on the device.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..autograd import Tensor, as_tensor
from ..device import check_device, device_of, is_device, move, place_like, to_host


def _buffer_array(value):
    """A buffer's array: a DeviceArray stays on the GPU, anything else becomes a NumPy array."""
    return value if is_device(value) else np.asarray(value)


class Parameter(Tensor):
    """A Tensor that a Module trains: requires_grad is on."""

    def __init__(self, data):
        data = data.data if isinstance(data, Tensor) else data
        super().__init__(data.copy() if is_device(data) else np.array(data, copy=True),
                         requires_grad=True)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


class Module:
    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                               f"before setting attributes")
        if name in self._buffers and not isinstance(value, (Parameter, Module)):
            object.__setattr__(self, name, _buffer_array(value))  # buffers stay buffers
            return
        for table in (self._parameters, self._modules):
            table.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name, array):
        """A named array saved in the state dict but not trained (e.g. running statistics)."""
        self._buffers[name] = True
        object.__setattr__(self, name, _buffer_array(array))

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # --- traversal ---------------------------------------------------------------------------
    def named_modules(self, prefix=""):
        yield prefix, self
        for name, module in self._modules.items():
            yield from module.named_modules(f"{prefix}{name}.")

    def named_parameters(self):
        for prefix, module in self.named_modules():
            for name, p in module._parameters.items():
                yield prefix + name, p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self):
        for prefix, module in self.named_modules():
            for name in module._buffers:
                yield prefix + name, getattr(module, name)

    def num_parameters(self):
        return int(sum(p.size for p in self.parameters()))

    # --- modes and dtypes ---------------------------------------------------------------------
    def train(self, mode: bool = True):
        for _, module in self.named_modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def to(self, dtype):
        """Cast every floating parameter and buffer to ``dtype`` (e.g. float64 for gradchecks)."""
        dtype = np.dtype(dtype)
        for _, module in self.named_modules():
            for p in module._parameters.values():
                p.data = p.data.astype(dtype)
                p.grad = None
            for name in module._buffers:
                value = getattr(module, name)
                if value.dtype.kind == "f":
                    object.__setattr__(module, name, value.astype(dtype))
        return self

    @property
    def device(self) -> str:
        """Where the parameters live: "cuda" (GPU memory) or "cpu"."""
        first = self._first_parameter()
        return "cpu" if first is None else device_of(first.data)

    def _first_parameter(self):
        """The first parameter (all live on one side), without walking the whole tree."""
        return next((p for _, p in self.named_parameters()), None)

    def to_device(self, name: str):
        """Move every parameter and floating buffer to device ``name`` ("cpu" or "cuda"); the
        gradients are dropped. Integer buffers (counters) stay on the host. "cuda" raises
        CudaUnavailableError, saying what to do, where there is no GPU."""
        check_device(name)
        for _, module in self.named_modules():
            for p in module._parameters.values():
                p.data = move(p.data, name)
                p.grad = None
            for attr in module._buffers:
                value = getattr(module, attr)
                if value.dtype.kind == "f":
                    object.__setattr__(module, attr, move(value, name))
        return self

    def place(self, array):
        """``array`` moved to where this module's parameters live (unchanged if it is there)."""
        first = self._first_parameter()
        return place_like(array, None if first is None else first.data)

    def input_tensor(self, value, dtype=None):
        """``value`` (array or Tensor) as a Tensor on this module's device: a model's entry
        points take host images and move them over once. An array is cast to ``dtype``; a
        Tensor already on the device is returned as it is (its graph kept)."""
        if isinstance(value, Tensor):
            if value.device == self.device:
                return value
            value = value.data
        return as_tensor(self.place(value), dtype=dtype)

    # --- state ---------------------------------------------------------------------------------
    def state_dict(self):
        """Name -> host (NumPy) array copy of every parameter and buffer."""
        state = OrderedDict((n, np.array(to_host(p.data), copy=True))
                            for n, p in self.named_parameters())
        state.update((n, np.array(to_host(b), copy=True)) for n, b in self.named_buffers())
        return state

    def load_state_dict(self, state, strict: bool = True):
        """Copy arrays into parameters and buffers, checking names and shapes.

        Raises KeyError for missing or unexpected names (when strict) and ValueError for a
        shape mismatch, naming every offending entry.
        """
        own = dict(self.named_parameters())
        buffers = {n for n, _ in self.named_buffers()}
        expected = set(own) | buffers
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - expected)
        if strict and (missing or unexpected):
            raise KeyError(f"state dict does not fit {type(self).__name__}: missing {missing}, "
                           f"unexpected {unexpected}")
        bad = []
        for name in sorted(expected & set(state)):
            value = np.asarray(to_host(state[name]))
            current = own[name].data if name in own else self._buffer(name)
            if value.shape != current.shape:
                bad.append(f"{name}: checkpoint {value.shape} vs model {current.shape}")
        if bad:
            raise ValueError("state dict shapes do not fit the model:\n  " + "\n  ".join(bad))
        for name in expected & set(state):
            value = np.asarray(to_host(state[name]))
            if name in own:
                current = own[name].data
                own[name].data = place_like(value.astype(current.dtype, copy=True), current)
            else:
                module, attr = self._owner(name)
                current = getattr(module, attr)
                object.__setattr__(module, attr,
                                   place_like(value.astype(current.dtype, copy=True), current))
        return self

    def _owner(self, dotted):
        *path, attr = dotted.split(".")
        module = self
        for part in path:
            module = module._modules[part]
        return module, attr

    def _buffer(self, dotted):
        module, attr = self._owner(dotted)
        return getattr(module, attr)

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, module in self._modules.items():
            sub = repr(module).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        return "\n".join(lines) + (")" if len(lines) == 1 else "\n)")


class Sequential(Module):
    """Modules applied one after another; sub-modules are named "0", "1", ..."""

    def __init__(self, *modules):
        super().__init__()
        for i, module in enumerate(modules):
            setattr(self, str(i), module)

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x
