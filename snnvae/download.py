"""Download MNIST / Fashion-MNIST into the user cache, with a progress bar and checksums.

Files are fetched as .gz from the first mirror that answers, written to a temporary name,
checked (md5 of the decompressed IDX content, which does not depend on how a mirror compressed
it) and only then renamed into place, so an interrupted download never leaves a file that looks
complete.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .data import SPLIT_FILES, DataError, search_dirs

MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/"],
    "fashion-mnist": ["https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                      "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}
# md5 of the decompressed IDX files
CHECKSUMS = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}


def cache_dir(name: str) -> Path:
    """The user cache directory of data set ``name`` (third place in the search path)."""
    return search_dirs(name)[-2]


def md5_of_idx(path: Path) -> str:
    digest = hashlib.md5()
    with gzip.open(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, target: Path, timeout: float):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with open(target, "wb") as out, tqdm(total=total, unit="B", unit_scale=True,
                                             desc=url.rsplit("/", 1)[-1], leave=False) as bar:
            for block in iter(lambda: response.read(1 << 16), b""):
                out.write(block)
                bar.update(len(block))


def download_dataset(name: str, directory=None, mirrors=None, timeout: float = 30.0) -> Path:
    """Fetch the four files of ``name`` into ``directory`` (default: the user cache)."""
    if name not in CHECKSUMS:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(CHECKSUMS)}")
    directory = Path(directory) if directory is not None else cache_dir(name)
    directory.mkdir(parents=True, exist_ok=True)
    mirrors = mirrors or MIRRORS[name]
    for stem in [s for pair in SPLIT_FILES.values() for s in pair]:
        final = directory / (stem + ".gz")
        if final.exists() and md5_of_idx(final) == CHECKSUMS[name][stem]:
            continue
        partial = directory / (stem + ".gz.part")
        errors = []
        for mirror in mirrors:
            try:
                _fetch(mirror + stem + ".gz", partial, timeout)
                got = md5_of_idx(partial)
                if got != CHECKSUMS[name][stem]:
                    raise DataError(f"checksum mismatch (md5 {got}, expected {CHECKSUMS[name][stem]})")
                os.replace(partial, final)
                break
            except (urllib.error.URLError, OSError, EOFError, DataError) as err:
                errors.append(f"{mirror}: {err}")
                partial.unlink(missing_ok=True)
        else:
            raise DataError(f"could not download {stem}.gz of {name}:\n  " + "\n  ".join(errors)
                            + f"\nWithout a network, copy the four IDX files into {directory} "
                              f"(or pass --data-dir).")
    return directory
