"""Checkpoints as plain .npz files (no pickle): model and optimiser arrays plus a JSON header.

Layout: "model/<name>" for every parameter and buffer, "optim/<key>" for the optimiser state,
"extra/<key>" for other arrays (e.g. the current epoch's batch order), and "meta", a JSON string
with everything else (epoch, step, config, the random generator's state). Writes go to a
temporary file that is renamed over the old checkpoint, so a crash never leaves half a file.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

FORMAT = "snnvae-checkpoint-1"


class CheckpointError(RuntimeError):
    pass


def save_checkpoint(path, *, model, optimizer=None, meta=None, extra=None):
    path = Path(path)
    arrays = {f"model/{k}": np.asarray(v) for k, v in model.state_dict().items()}
    if optimizer is not None:
        arrays.update({f"optim/{k}": np.asarray(v) for k, v in optimizer.state_dict().items()})
    for k, v in (extra or {}).items():
        arrays[f"extra/{k}"] = np.asarray(v)
    arrays["meta"] = np.array(json.dumps({"format": FORMAT, **(meta or {})}))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path):
    """-> (model_state, optimizer_state, meta, extra); raises CheckpointError with the reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise CheckpointError(f"{path} is not a readable checkpoint ({err}); it may be truncated. "
                              f"Delete it or start again with --force.") from err
    if "meta" not in arrays:
        raise CheckpointError(f"{path} has no 'meta' entry: not an snnvae checkpoint")
    meta = json.loads(str(arrays.pop("meta")))
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    split = {"model/": {}, "optim/": {}, "extra/": {}}
    for key, value in arrays.items():
        for prefix, table in split.items():
            if key.startswith(prefix):
                table[key[len(prefix):]] = value
    return split["model/"], split["optim/"], meta, split["extra/"]
