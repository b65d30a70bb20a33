"""Autoencoder Frechet distance (AE-FD), the generation metric of the FSVAE and ESVAE papers.

    AE-FD = FrechetDistance(N(mu_g, S_g), N(mu_t, S_t))

where (mu_t, S_t) are the mean and covariance (ddof 1) of the 64-d features of the test set and
(mu_g, S_g) those of ``n_samples`` (5000) generated images, both embedded by the encoder of a
fixed, pretrained ANN autoencoder (``models.feature_ae.FeatureEncoder``, official weights
``fsvae_ae_mnist_64.pth`` / ``fsvae_ae_fashion_64.pth``).

As the papers computed it (bn_mode "trainbn", the default): the autoencoder's BatchNorm layers
normalise each batch of 256 with its own statistics; the test set is encoded in file order,
generated images in the batches of 256 they were generated in. bn_mode "eval" (running
statistics) is the cleaner alternative; its numbers are not comparable with the papers'.

Test-set statistics are computed by this project (never downloaded) and cached in
``$XDG_CACHE_HOME/snnvae/aefd/`` (default ``~/.cache/snnvae/aefd/``), one file per data set,
number of images, sha256 of the images, sha256 of the weights and BatchNorm mode.

Weights are found by ``find_ae_weights``: a path you give (file or folder), then
``$SNNVAE_AE_WEIGHTS`` (file or folder), ``$SNNVAE_SHARED/ref``, the user cache
``$XDG_CACHE_HOME/snnvae/ref`` and ``../shared/ref`` beside a source checkout.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..models.feature_ae import BN_MODES, OFFICIAL_BATCH, FeatureEncoder, weights_sha256
from .frechet import frechet_distance_details, gaussian_statistics

WEIGHT_FILES = {"mnist": "fsvae_ae_mnist_64.pth", "embedded-mnist": "fsvae_ae_mnist_64.pth",
                "fashion-mnist": "fsvae_ae_fashion_64.pth"}
DEFAULT_SAMPLES = 5000
_ENCODERS = {}


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "snnvae"


def weights_search_dirs(path=None) -> list[Path]:
    """Where ``find_ae_weights`` looks, in order (folders, or files given directly)."""
    places = []
    if path is not None:
        places.append(Path(path))
    if os.environ.get("SNNVAE_AE_WEIGHTS"):
        places.append(Path(os.environ["SNNVAE_AE_WEIGHTS"]))
    if os.environ.get("SNNVAE_SHARED"):
        places.append(Path(os.environ["SNNVAE_SHARED"]) / "ref")
    places.append(_cache_root() / "ref")
    places.append(Path(__file__).resolve().parents[2].parent / "shared" / "ref")
    return places


def find_ae_weights(dataset: str, path=None) -> Path:
    """The official feature-autoencoder weights for ``dataset`` ('mnist', 'fashion-mnist',
    'embedded-mnist'); raises FileNotFoundError listing every place looked in."""
    if dataset not in WEIGHT_FILES:
        raise ValueError(f"no AE-FD weights are known for data set {dataset!r}; known: "
                         f"{sorted(WEIGHT_FILES)}")
    name = WEIGHT_FILES[dataset]
    if path is not None and not Path(path).exists():
        raise FileNotFoundError(f"AE-FD weights: {path} does not exist")
    places = weights_search_dirs(path)
    for place in places:
        if place.is_file():                     # a file named explicitly is used as it is
            return place
        if (place / name).is_file():
            return place / name
    listing = "\n  ".join(str(p) for p in places)
    raise FileNotFoundError(
        f"the AE-FD feature autoencoder weights {name} were not found. Looked in:\n  {listing}\n"
        f"Pass the file (--ae-weights PATH) or set SNNVAE_AE_WEIGHTS to it or its folder.")


def load_encoder(weights, dtype=np.float64) -> FeatureEncoder:
    """The feature encoder for a weights file (kept in memory for later calls)."""
    key = (str(Path(weights).resolve()), np.dtype(dtype).str)
    if key not in _ENCODERS:
        _ENCODERS[key] = FeatureEncoder.from_official(weights, dtype=dtype)
    return _ENCODERS[key]


def _encode(encoder, images, bn_mode, progress, what):
    with tqdm(total=len(images), desc=f"AE features of {what}", unit="img",
              disable=not progress, leave=False) as bar:
        return encoder.encode(images, bn_mode, OFFICIAL_BATCH, progress=bar.update)


def feature_statistics(encoder: FeatureEncoder, images, bn_mode="trainbn", progress=False):
    """Images (n, C, S, S) in [-1, 1] -> (mu (64,), sigma (64, 64)) of their features, encoded
    in consecutive batches of 256 in the order given."""
    return gaussian_statistics(_encode(encoder, images, bn_mode, progress, f"{len(images)} images"))


def _images_sha256(images) -> str:
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


def reference_statistics(encoder: FeatureEncoder, images, *, dataset: str, weights_sha: str,
                        bn_mode="trainbn", cache=True, cache_dir=None, progress=False):
    """(mu, sigma, info) of the test images' features, read from or written to the cache.

    images: the preprocessed test split in file order, (n, 1, 32, 32) in [-1, 1].
    info: {cache_file, cached (True when read back), images, bn_mode}.
    """
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
    images = np.asarray(images)
    root = Path(cache_dir) if cache_dir is not None else _cache_root() / "aefd"
    name = (f"{dataset}-{len(images)}-{_images_sha256(images)[:12]}-{weights_sha[:12]}-"
            f"{bn_mode}.npz")
    path = root / name
    info = {"cache_file": str(path) if cache else None, "cached": False,
            "images": int(len(images)), "bn_mode": bn_mode}
    if cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                mu, sigma = f["mu"], f["sigma"]
            if mu.shape == (encoder.latent_layer.out_features,):
                return mu, sigma, {**info, "cached": True}
        except (OSError, ValueError, KeyError):
            pass                                          # unreadable: recompute and rewrite
    mu, sigma = feature_statistics(encoder, images, bn_mode, progress)
    if cache:
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, mu=mu, sigma=sigma, meta=np.array(json.dumps(
                {"dataset": dataset, "images": len(images), "weights_sha256": weights_sha,
                 "bn_mode": bn_mode, "batch": OFFICIAL_BATCH})))
        os.replace(tmp, path)
    return mu, sigma, info


def generate(model, n, rng: np.random.Generator, batch_size=OFFICIAL_BATCH, progress=False):
    """n images from ``model.sample`` (eval mode), drawn ``batch_size`` at a time."""
    if n < 2:
        raise ValueError(f"AE-FD needs at least 2 generated images, got n = {n}")
    was_training = model.training
    model.eval()
    out = []
    try:
        with tqdm(total=n, desc="generating", unit="img", disable=not progress, leave=False) as bar:
            for start in range(0, n, batch_size):
                m = min(batch_size, n - start)
                out.append(np.asarray(model.sample(m, rng)))
                bar.update(m)
    finally:
        model.train(was_training)
    return np.concatenate(out)


def aefd_of_images(encoder, generated, test_mu, test_sigma, bn_mode="trainbn", progress=False):
    """AE-FD of given images against test statistics -> frechet_distance_details dict."""
    mu, sigma = feature_statistics(encoder, np.asarray(generated), bn_mode, progress)
    return frechet_distance_details(mu, sigma, test_mu, test_sigma)


def autoencoder_frechet_distance(model, test_images, weights, *, dataset: str,
                                 rng: np.random.Generator, n_samples=DEFAULT_SAMPLES,
                                 bn_mode="trainbn", cache=True, cache_dir=None, progress=False):
    """AE-FD of ``n_samples`` images generated by ``model`` against ``test_images``.

    Returns {aefd, n_samples, test_images, bn_mode, weights, weights_sha256, cache_file,
    cached, eps_added, max_imaginary}.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    encoder = load_encoder(weights)
    sha = weights_sha256(weights)
    test_mu, test_sigma, info = reference_statistics(
        encoder, test_images, dataset=dataset, weights_sha=sha, bn_mode=bn_mode, cache=cache,
        cache_dir=cache_dir, progress=progress)
    generated = generate(model, n_samples, rng, progress=progress)
    details = aefd_of_images(encoder, generated, test_mu, test_sigma, bn_mode, progress)
    return {"aefd": details["distance"], "n_samples": int(n_samples),
            "test_images": info["images"], "bn_mode": bn_mode, "weights": str(weights),
            "weights_sha256": sha, "cache_file": info["cache_file"], "cached": info["cached"],
            "eps_added": details["eps_added"], "max_imaginary": details["max_imaginary"]}
