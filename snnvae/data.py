"""Real MNIST and Fashion-MNIST: the IDX reader, where the files are looked for, mini-batches.

IDX format (LeCun): a big-endian header, then raw bytes.
    bytes 0-1: zero;  byte 2: element type (0x08 = unsigned byte);  byte 3: number of axes d
    then d big-endian uint32 sizes, then prod(sizes) elements.
Images are (n, 28, 28) uint8 (magic 0x00000803), labels (n,) uint8 in 0..9 (magic 0x00000801).
Files may be gzip-compressed (``.gz``) or raw.

Where files are looked for, in order (the first directory holding all four files wins):
    1. the directory the caller names (``data_dir``)
    2. ``$SNNVAE_DATA/<name>``
    3. the user cache, ``$XDG_CACHE_HOME/snnvae/<name>`` (default ``~/.cache/snnvae/<name>``)
    4. ``/usr/share/datasets/<name>`` (where Debian's dataset-fashion-mnist package installs)

A small subset of real MNIST ships inside the package (``load_embedded_mnist``) so that lessons
and the default example run with no download.
"""
from __future__ import annotations

import gzip
import os
from importlib import resources
from pathlib import Path

import numpy as np

DATASETS = ("mnist", "fashion-mnist")
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801


class DataError(RuntimeError):
    """A data file is missing, truncated or not what it claims to be."""


# --- IDX ---------------------------------------------------------------------------------------


def read_idx(path) -> np.ndarray:
    """Read one IDX file (raw or gzip) into a uint8 array, validating its header and size."""
    path = Path(path)
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}. Delete it and provide the file again.") from err
    if len(raw) < 4:
        raise DataError(f"{path} is {len(raw)} bytes long: too short to be an IDX file")
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (header bytes "
                        f"{raw[:4].hex()}; expected 000008 followed by the number of axes)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: IDX header declares {ndim} axes but the file ends early")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(f"{path}: header says shape {shape} ({expected} bytes of data) but the "
                        f"file holds {len(raw) - header}; it is truncated or corrupt, download it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_file(directory: Path, stem: str):
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def search_dirs(name: str, data_dir=None) -> list[Path]:
    """The directories looked in for data set ``name``, in order."""
    dirs = []
    if data_dir is not None:
        dirs.append(Path(data_dir))
    if os.environ.get("SNNVAE_DATA"):
        dirs.append(Path(os.environ["SNNVAE_DATA"]) / name)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "snnvae" / name
    dirs.append(cache)
    dirs.append(Path("/usr/share/datasets") / name)
    return dirs


def find_dataset(name: str, data_dir=None) -> Path:
    """The first search directory that holds all four IDX files of ``name``."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {DATASETS}")
    stems = [s for pair in SPLIT_FILES.values() for s in pair]
    looked = search_dirs(name, data_dir)
    for d in looked:
        if all(_find_file(d, s) for s in stems):
            return d
    places = "\n  ".join(str(d) for d in looked)
    raise DataError(
        f"{name}: the four IDX files ({', '.join(stems)}, raw or .gz) were not found. Looked in:\n"
        f"  {places}\nPut them in one of these directories, pass data_dir=... (--data-dir), or "
        f"set SNNVAE_DATA to a folder that holds '{name}/'.")


def load_idx_split(name: str, split: str, data_dir=None):
    """(images uint8 (n, 28, 28), labels uint8 (n,)) of one split of MNIST/Fashion-MNIST."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    directory = find_dataset(name, data_dir)
    image_stem, label_stem = SPLIT_FILES[split]
    images = read_idx(_find_file(directory, image_stem))
    labels = read_idx(_find_file(directory, label_stem))
    validate_images_labels(images, labels, source=str(directory))
    return images, labels


def validate_images_labels(images, labels, source="data"):
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{source}: images have shape {images.shape}, expected (n, 28, 28)")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"{source}: {images.shape[0]} images but labels of shape {labels.shape}")
    if labels.size and labels.max() > 9:
        raise DataError(f"{source}: labels must lie in 0..9, found {int(labels.max())}")


def load_split(name: str, split: str, data_dir=None, download=False):
    """uint8 images and labels of ``name`` ('mnist', 'fashion-mnist' or 'embedded-mnist').

    With download=True a data set missing from every search directory is fetched into the user
    cache (needs a network).
    """
    if name == "embedded-mnist":
        return load_embedded_mnist(split)
    try:
        return load_idx_split(name, split, data_dir)
    except DataError:
        if not download:
            raise
        from .download import download_dataset
        download_dataset(name)
        return load_idx_split(name, split, data_dir)


def load_embedded_mnist(split: str):
    """The real-MNIST subset shipped in the package: (images uint8 (n, 28, 28), labels)."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    with resources.files("snnvae.datasets").joinpath("mnist_subset.npz").open("rb") as f:
        archive = np.load(f, allow_pickle=False)
        images, labels = archive[f"{split}_images"], archive[f"{split}_labels"]
    validate_images_labels(images, labels, source="embedded MNIST subset")
    return images, labels


# --- arrays for the networks ---------------------------------------------------------------------


def prepare_images(images_u8, size=32, dtype=np.float32):
    """The papers' preprocessing: PIL-exact bilinear resize of the uint8 images to size x size,
    then scaling to [-1, 1]. uint8 (n, 28, 28) -> (n, 1, size, size)."""
    from .resize import resize_bilinear_u8
    if size != images_u8.shape[-1]:
        images_u8 = resize_bilinear_u8(images_u8, size)
    return to_signed_unit(images_u8, dtype)


def to_signed_unit(images_u8, dtype=np.float32):
    """uint8 (n, H, W) -> (n, 1, H, W) in [-1, 1]: 2 * (x / 255) - 1, as the papers scale."""
    x = images_u8.astype(dtype) / dtype(255.0)
    return (2 * x - 1)[:, None]


def minibatches(n, batch_size, rng: np.random.Generator, drop_last=False):
    """Shuffled index arrays covering range(n) once, drawn from ``rng``."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = rng.permutation(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start:start + batch_size]
