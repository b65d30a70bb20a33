"""The IDX reader, the data search path and the embedded real-MNIST subset."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from snnvae import data


def write_idx(path, array, magic_type=0x08, truncate=0, compress=False):
    header = bytes([0, 0, magic_type, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    payload = payload[:len(payload) - truncate] if truncate else payload
    if compress:
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def make_dataset(directory, n=5, compress=True):
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for split, (img, lab) in data.SPLIT_FILES.items():
        write_idx(directory / (img + suffix), rng.integers(0, 256, (n, 28, 28)), compress=compress)
        write_idx(directory / (lab + suffix), rng.integers(0, 10, n), compress=compress)
    return directory


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, compress):
    images = np.random.default_rng(1).integers(0, 256, (3, 28, 28)).astype(np.uint8)
    path = write_idx(tmp_path / ("x.gz" if compress else "x"), images, compress=compress)
    np.testing.assert_array_equal(data.read_idx(path), images)


def test_read_idx_rejects_truncated_wrong_and_corrupt_files(tmp_path):
    images = np.zeros((3, 28, 28), np.uint8)
    with pytest.raises(data.DataError, match="truncated"):
        data.read_idx(write_idx(tmp_path / "short", images, truncate=10))
    with pytest.raises(data.DataError, match="not an unsigned-byte IDX"):
        data.read_idx(write_idx(tmp_path / "float", images, magic_type=0x0D))
    (tmp_path / "bad.gz").write_bytes(b"this is not gzip")
    with pytest.raises(data.DataError, match="cannot read"):
        data.read_idx(tmp_path / "bad.gz")
    (tmp_path / "tiny").write_bytes(b"\x00")
    with pytest.raises(data.DataError, match="too short"):
        data.read_idx(tmp_path / "tiny")


def test_labels_are_validated(tmp_path):
    with pytest.raises(data.DataError, match="labels must lie in 0..9"):
        data.validate_images_labels(np.zeros((2, 28, 28), np.uint8), np.array([1, 12], np.uint8))
    with pytest.raises(data.DataError, match="2 images but labels"):
        data.validate_images_labels(np.zeros((2, 28, 28), np.uint8), np.array([1], np.uint8))


def test_search_order_and_error_names_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv("SNNVAE_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(data.DataError) as err:
        data.find_dataset("mnist", tmp_path / "explicit")
    message = str(err.value)
    for place in ["explicit", "env/mnist", "cache/snnvae/mnist", "/usr/share/datasets/mnist",
                  "--data-dir"]:
        assert place in message
    make_dataset(tmp_path / "cache" / "snnvae" / "mnist")
    assert data.find_dataset("mnist") == tmp_path / "cache" / "snnvae" / "mnist"
    make_dataset(tmp_path / "env" / "mnist", compress=False)
    assert data.find_dataset("mnist") == tmp_path / "env" / "mnist"          # env before cache
    make_dataset(tmp_path / "explicit")
    assert data.find_dataset("mnist", tmp_path / "explicit") == tmp_path / "explicit"
    images, labels = data.load_idx_split("mnist", "test", tmp_path / "explicit")
    assert images.shape == (5, 28, 28) and labels.shape == (5,)


def test_embedded_subset_is_real_mnist():
    images, labels = data.load_embedded_mnist("train")
    assert images.shape == (8000, 28, 28) and images.dtype == np.uint8
    assert set(np.unique(labels)) == set(range(10))
    test_images, _ = data.load_embedded_mnist("test")
    assert test_images.shape == (2000, 28, 28)
    # handwritten digits: mostly black background with bright strokes
    assert 0.1 < (images > 127).mean() < 0.25


def test_embedded_subset_equals_the_official_files_when_present():
    try:
        directory = data.find_dataset("mnist")
    except data.DataError as err:
        pytest.skip(f"full MNIST not found through the data search path: {err}")
    full, full_labels = data.load_idx_split("mnist", "test", directory)
    sub, sub_labels = data.load_embedded_mnist("test")
    np.testing.assert_array_equal(full[:len(sub)], sub)
    np.testing.assert_array_equal(full_labels[:len(sub)], sub_labels)
    assert full.shape == (10000, 28, 28)


def test_scaling_and_minibatches():
    x = data.to_signed_unit(np.array([[[0, 255]]], np.uint8))
    assert x.shape == (1, 1, 1, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x.ravel(), [-1.0, 1.0])
    batches = list(data.minibatches(10, 4, np.random.default_rng(0)))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate(batches)) == list(range(10))
    again = list(data.minibatches(10, 4, np.random.default_rng(0)))
    assert all((a == b).all() for a, b in zip(batches, again))
    with pytest.raises(ValueError, match="batch_size"):
        next(data.minibatches(10, 0, np.random.default_rng(0)))
