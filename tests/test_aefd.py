"""AE-FD: the feature encoder against the official features (golden ae_features.npz, both
BatchNorm modes), the Frechet distance against closed forms, and AE-FD's behaviour on real,
shuffled and noised images.

Tolerances (golden/README.md): float64 forward values to 1e-10 relative to the largest entry;
the float32 encoder to 2e-6 (measured 4.6e-7).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.linalg

from snnvae import data
from snnvae.metrics import aefd, frechet
from snnvae.metrics.frechet import frechet_distance, frechet_distance_details, gaussian_statistics
from snnvae.models.feature_ae import FeatureEncoder, convert_official_feature_ae_state
from conftest import shared_dir


def close(got, want, rtol):
    np.testing.assert_allclose(got, want, rtol=0, atol=rtol * np.max(np.abs(want)))


@pytest.fixture(scope="module")
def mnist_weights():
    base = shared_dir()
    path = None if base is None else base / "ref" / "fsvae_ae_mnist_64.pth"
    if path is None or not path.exists():
        pytest.skip("fsvae_ae_mnist_64.pth not found under $SNNVAE_SHARED/ref or ../shared/ref")
    return path


@pytest.fixture(scope="module")
def encoder(mnist_weights):
    return FeatureEncoder.from_official(mnist_weights)


@pytest.fixture(scope="module")
def embedded_test():
    """The first 2000 MNIST test digits (shipped), preprocessed in float64."""
    u8, _ = data.load_embedded_mnist("test")
    return data.prepare_images(u8, dtype=np.float64)


# --- the feature encoder -----------------------------------------------------------------------


def test_codes_of_16_digits_in_both_bn_modes(golden, encoder, mnist_weights):
    g, pre = golden("ae_features"), golden("mnist_preprocess")
    close(encoder.encode(pre["x"], "eval"), g["latent16"], 1e-10)
    # training-mode BatchNorm: the 16 digits are one batch, normalised by their own statistics
    close(encoder.encode(pre["x"], "trainbn", batch_size=16), g["latent16_trainbn"], 1e-10)
    assert not np.allclose(g["latent16"], g["latent16_trainbn"], atol=1e-3)   # modes differ
    f32 = FeatureEncoder.from_official(mnist_weights, dtype=np.float32)
    got = f32.encode(pre["x_f32"], "eval")
    assert got.dtype == np.float32
    close(got, g["latent16_f32"], 2e-6)


def test_statistics_of_1000_digits_in_both_bn_modes(golden, encoder, embedded_test):
    g, pre = golden("ae_features"), golden("mnist_preprocess")
    np.testing.assert_array_equal(embedded_test[:16], pre["x"])    # the same test digits
    images = embedded_test[:1000]
    for mode, suffix in (("eval", ""), ("trainbn", "_trainbn")):
        mu, sigma = aefd.feature_statistics(encoder, images, mode)  # batches 256, 256, 256, 232
        close(mu, g["mu1000" + suffix], 1e-10)
        close(sigma, g["sigma1000" + suffix], 1e-10)


def test_encoding_leaves_the_running_statistics_alone(encoder, embedded_test):
    before = {k: v.copy() for k, v in encoder.state_dict().items()}
    encoder.encode(embedded_test[:300], "trainbn")
    for k, v in encoder.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    assert not encoder.training


def test_bad_requests_name_the_problem(encoder, mnist_weights):
    with pytest.raises(ValueError, match="bn_mode"):
        encoder.encode(np.zeros((2, 1, 32, 32)), "train")
    with pytest.raises(ValueError, match=r"\(N, 1, 32, 32\)"):
        encoder.encode(np.zeros((2, 32, 32)))
    with pytest.raises(ValueError, match="not the official feature autoencoder"):
        convert_official_feature_ae_state({"decoder.0.0.weight": np.zeros(3)})


@pytest.mark.slow
def test_full_test_set_statistics_match_the_official_file(golden, encoder):
    """The official mnist_test_64.npz is not here, but the golden meta records its largest
    |mu| and |sigma| and how far the (float64, training-mode BN) reference was from it."""
    try:
        u8, _ = data.load_split("mnist", "test", shared_dir() / "data" / "mnist"
                                if shared_dir() else None)
    except data.DataError as err:
        pytest.skip(f"full MNIST test set not found: {err}")
    check = json.loads(str(golden("ae_features")["_meta"]))["full_test_check_vs_official_stats_trainbn"]
    mu, sigma = aefd.feature_statistics(encoder, data.prepare_images(u8, dtype=np.float64))
    assert abs(np.abs(mu).max() - check["mu_max_abs"]) <= check["mu_max_abs_diff"] + 1e-9
    assert abs(np.abs(sigma).max() - check["sigma_max_abs"]) <= check["sigma_max_abs_diff"] + 1e-9


# --- the Frechet distance ------------------------------------------------------------------------


def test_diagonal_and_commuting_covariances_match_the_closed_form():
    """Commuting S1 = Q diag(a) Q^T, S2 = Q diag(b) Q^T: d^2 = |mu1-mu2|^2 + sum (sqrt a - sqrt b)^2."""
    rng = np.random.default_rng(0)
    d = 6
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-8)
    # one dimension: (m1 - m2)^2 + (s1 - s2)^2 with standard deviations s
    assert frechet_distance([1.0], [[4.0]], [-2.0], [[9.0]]) == pytest.approx(9 + 1)


def test_general_covariances_match_the_symmetric_form():
    """Tr (S1 S2)^(1/2) = sum of sqrt(eigenvalues of S1^(1/2) S2 S1^(1/2)), a symmetric matrix."""
    rng = np.random.default_rng(1)
    d = 8
    x, y = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = x @ x.T + 0.1 * np.eye(d), y @ y.T + 0.1 * np.eye(d)
    r1 = scipy.linalg.sqrtm(s1).real
    tr = np.sum(np.sqrt(np.linalg.eigvalsh(r1 @ s2 @ r1)))
    expected = np.trace(s1) + np.trace(s2) - 2 * tr
    assert frechet_distance(np.zeros(d), s1, np.zeros(d), s2) == pytest.approx(expected, rel=1e-9)
    assert abs(frechet_distance(np.ones(d), s1, np.ones(d), s1)) < 1e-9 * np.trace(s1)
    # symmetric in its two arguments
    assert frechet_distance(np.zeros(d), s2, np.ones(d), s1) == pytest.approx(
        frechet_distance(np.ones(d), s1, np.zeros(d), s2), rel=1e-9)


def test_failed_square_root_retries_with_eps_on_the_diagonals(monkeypatch):
    calls = []
    real = scipy.linalg.sqrtm

    def flaky(a):
        calls.append(a.copy())
        return np.full_like(a, np.nan) if len(calls) == 1 else real(a)

    monkeypatch.setattr(frechet.scipy.linalg, "sqrtm", flaky)
    a, b = np.array([1.0, 2.0]), np.array([3.0, 0.5])
    out = frechet_distance_details(np.zeros(2), np.diag(a), np.zeros(2), np.diag(b), eps=1e-3)
    assert out["eps_added"] and len(calls) == 2
    np.testing.assert_allclose(calls[1], np.diag((a + 1e-3) * (b + 1e-3)))
    expected = np.sum(a + b - 2 * np.sqrt((a + 1e-3) * (b + 1e-3)))
    assert out["distance"] == pytest.approx(expected, rel=1e-12)


def test_frechet_input_errors():
    with pytest.raises(ValueError, match="sigma"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.zeros(2), np.eye(2), np.array([0, np.nan]), np.eye(2))
    with pytest.raises(ValueError, match="n >= 2"):
        gaussian_statistics(np.zeros((1, 4)))


# --- AE-FD on real images ----------------------------------------------------------------------


def test_test_set_against_itself_is_zero_and_noise_makes_it_grow(encoder, embedded_test):
    embedded_test = embedded_test[:1000]
    mu, sigma = aefd.feature_statistics(encoder, embedded_test)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8
    rng = np.random.default_rng(5)
    distances = []
    for level in (0.1, 0.3, 0.6):
        noisy = np.clip(embedded_test + level * rng.normal(size=embedded_test.shape), -1, 1)
        distances.append(frechet_distance(*aefd.feature_statistics(encoder, noisy), mu, sigma))
    assert 0.5 < distances[0] < distances[1] < distances[2]
    # the same digits in another order: in training-mode BN the batches change, the distance
    # stays small next to the noised ones
    shuffled = embedded_test[rng.permutation(len(embedded_test))]
    assert frechet_distance(*aefd.feature_statistics(encoder, shuffled), mu, sigma) < distances[0]
    # with running statistics the features do not depend on the batches: the order is irrelevant
    assert abs(frechet_distance(*aefd.feature_statistics(encoder, shuffled, "eval"),
                                *aefd.feature_statistics(encoder, embedded_test, "eval"))) < 1e-8


class _Replay:
    """A stand-in generator whose samples are given images, in order."""

    def __init__(self, images):
        self.images, self.given, self.training = images, 0, True

    def eval(self):
        self.training = False

    def train(self, mode=True):
        self.training = mode

    def sample(self, n, rng):
        assert not self.training
        out = self.images[self.given:self.given + n]
        self.given += n
        return out


def test_autoencoder_frechet_distance_end_to_end_with_cache(tmp_path, mnist_weights, embedded_test):
    test = embedded_test[:512]
    kw = dict(dataset="embedded-mnist", rng=np.random.default_rng(0), cache_dir=tmp_path)
    first = aefd.autoencoder_frechet_distance(_Replay(test), test, mnist_weights, n_samples=512, **kw)
    assert abs(first["aefd"]) < 1e-8 and not first["cached"]
    assert first["n_samples"] == 512 and first["test_images"] == 512
    again = aefd.autoencoder_frechet_distance(_Replay(test[::-1]), test, mnist_weights,
                                              n_samples=512, **kw)
    assert again["cached"] and again["cache_file"] == first["cache_file"]
    noise = np.random.default_rng(1).uniform(-1, 1, test.shape)
    worse = aefd.autoencoder_frechet_distance(_Replay(noise), test, mnist_weights, n_samples=512, **kw)
    assert worse["aefd"] > 100 * max(again["aefd"], 1e-3)
    eval_mode = aefd.autoencoder_frechet_distance(_Replay(test), test, mnist_weights,
                                                  n_samples=512, bn_mode="eval", **kw)
    assert eval_mode["cache_file"] != first["cache_file"] and abs(eval_mode["aefd"]) < 1e-8
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_cached_statistics_are_those_computed(tmp_path, encoder, embedded_test):
    images = embedded_test[:300]
    mu, sigma, info = aefd.reference_statistics(encoder, images, dataset="x", weights_sha="ab",
                                                cache_dir=tmp_path)
    mu2, sigma2, info2 = aefd.reference_statistics(encoder, images, dataset="x",
                                                   weights_sha="ab", cache_dir=tmp_path)
    assert not info["cached"] and info2["cached"]
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(sigma, sigma2)
    other = aefd.reference_statistics(encoder, images[:299], dataset="x", weights_sha="ab",
                                      cache_dir=tmp_path)
    assert not other[2]["cached"]                         # other images, other cache entry


def test_weights_search(tmp_path, monkeypatch, mnist_weights):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "fsvae_ae_fashion_64.pth").write_bytes(b"x")
    monkeypatch.setenv("SNNVAE_AE_WEIGHTS", str(folder))
    assert aefd.find_ae_weights("fashion-mnist") == folder / "fsvae_ae_fashion_64.pth"
    assert aefd.find_ae_weights("mnist", mnist_weights) == mnist_weights
    with pytest.raises(FileNotFoundError, match="does not exist"):
        aefd.find_ae_weights("mnist", tmp_path / "nothing.pth")
    with pytest.raises(ValueError, match="no AE-FD weights"):
        aefd.find_ae_weights("cifar10")
    monkeypatch.setattr(aefd, "weights_search_dirs", lambda path=None: [tmp_path / "empty"])
    with pytest.raises(FileNotFoundError, match="--ae-weights"):
        aefd.find_ae_weights("mnist")
