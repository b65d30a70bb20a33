"""The papers' preprocessing (PIL-exact bilinear 28 -> 32, scaling to [-1, 1]) and downloads."""
from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest

from snnvae import data, download
from snnvae.resize import bilinear_weights, fixed_point, resize_bilinear_u8


def test_matches_official_preprocessing(golden):
    g = golden("mnist_preprocess")
    resized = resize_bilinear_u8(g["u8"], 32)
    np.testing.assert_array_equal(resized, g["resized_u8"])
    np.testing.assert_array_equal(data.prepare_images(g["u8"], 32), g["x_f32"])
    np.testing.assert_array_equal(data.prepare_images(g["u8"], 32, np.float64), g["x"])


def test_bilinear_weights_by_hand():
    # 2 -> 4 pixels: scale 0.5, centres at 0.25, 0.75, 1.25, 1.75 in input coordinates;
    # output 0 sees input 0 at distance |0 - 0.25 + 0.5| = 0.25 -> w 0.75 and input 1 at
    # |1 - 0.25 + 0.5| = 1.25 -> 0: after normalising [1, 0] (edge clamping)
    w = bilinear_weights(2, 4)
    np.testing.assert_allclose(w, [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    # 28 -> 32: every row sums to one and uses at most two neighbouring taps
    w = bilinear_weights(28, 32)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert ((w > 0).sum(axis=1) <= 2).all()
    # output pixel 16: centre (16.5) * 0.875 = 14.4375 -> taps 13 (0.0625) and 14 (0.9375)
    np.testing.assert_allclose(w[16, 13:15], [0.0625, 0.9375])
    assert fixed_point(np.array([0.5, -0.5])).tolist() == [2 ** 21, -(2 ** 21)]


def test_resize_of_constant_and_ramp_images():
    flat = np.full((1, 28, 28), 77, np.uint8)
    assert (resize_bilinear_u8(flat, 32) == 77).all()          # weights sum to exactly 1
    ramp = np.tile(np.arange(0, 28, dtype=np.uint8) * 9, (28, 1))[None]
    out = resize_bilinear_u8(ramp, 32)[0]
    assert (np.diff(out[0].astype(int)) >= 0).all() and out[0, 0] == 0 and out[0, -1] == 243
    with pytest.raises(TypeError, match="uint8"):
        resize_bilinear_u8(np.zeros((2, 28, 28), np.float32), 32)


def _fake_mirror(tmp_path, monkeypatch, corrupt=None):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    sums = {}
    rng = np.random.default_rng(0)
    for stem in [s for pair in data.SPLIT_FILES.values() for s in pair]:
        shape = (3, 28, 28) if "images" in stem else (3,)
        payload = bytes([0, 0, 8, len(shape)]) + b"".join(int(s).to_bytes(4, "big") for s in shape)
        payload += rng.integers(0, 10, int(np.prod(shape))).astype(np.uint8).tobytes()
        sums[stem] = hashlib.md5(payload).hexdigest()
        if stem == corrupt:
            payload = payload[:-1] + b"\x07"
        (mirror / (stem + ".gz")).write_bytes(gzip.compress(payload))
    monkeypatch.setitem(download.CHECKSUMS, "mnist", sums)
    return mirror.as_uri() + "/"


def test_download_verifies_checksums_and_places_files(tmp_path, monkeypatch):
    url = _fake_mirror(tmp_path, monkeypatch)
    target = download.download_dataset("mnist", tmp_path / "cache", mirrors=[url])
    images, labels = data.load_idx_split("mnist", "train", target)
    assert images.shape == (3, 28, 28) and labels.shape == (3,)
    assert not list(target.glob("*.part"))


def test_download_rejects_a_corrupt_file_and_leaves_nothing_behind(tmp_path, monkeypatch):
    url = _fake_mirror(tmp_path, monkeypatch, corrupt="t10k-labels-idx1-ubyte")
    with pytest.raises(data.DataError, match="checksum mismatch"):
        download.download_dataset("mnist", tmp_path / "cache", mirrors=[url])
    assert not (tmp_path / "cache" / "t10k-labels-idx1-ubyte.gz").exists()
    assert not list((tmp_path / "cache").glob("*.part"))
    with pytest.raises(data.DataError, match="copy the four IDX files"):
        download.download_dataset("mnist", tmp_path / "c2", mirrors=[(tmp_path / "nowhere").as_uri() + "/"])


def test_full_datasets_when_present():
    for name in ("mnist", "fashion-mnist"):
        try:
            images, labels = data.load_idx_split(name, "test")
        except data.DataError as err:
            pytest.skip(f"{name} not found through the data search path: {err}")
        assert images.shape == (10000, 28, 28) and labels.max() == 9
        x = data.prepare_images(images[:100])
        assert x.shape == (100, 1, 32, 32) and x.min() == -1.0 and x.max() == 1.0
