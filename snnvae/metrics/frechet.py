"""The Frechet distance between two Gaussians, as FID and the papers' AE-FD compute it.

For N(mu1, S1) and N(mu2, S2) (Dowson & Landau 1982):

    d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))

(S1 S2)^(1/2) is the principal square root of the (generally non-symmetric) product, from
``scipy.linalg.sqrtm``. Its eigenvalues are those of S1^(1/2) S2 S1^(1/2), real and >= 0, so
the exact trace is real; rounding leaves tiny imaginary parts, which are dropped (real part).
The safeguards of the papers' code: when the square root fails or is not finite (a singular
product, e.g. a covariance estimated from fewer samples than dimensions), eps = 1e-6 is added
to both diagonals and the root is taken again; a large imaginary part left on the diagonal
(> 1e-3) is reported with a warning rather than silently dropped.

Shapes: mu (d,), sigma (d, d). ``gaussian_statistics(features)`` gives mu and the unbiased
covariance (ddof 1, as ``numpy.cov(rowvar=False)``) of features (n, d).
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg

IMAGINARY_TOLERANCE = 1e-3


def gaussian_statistics(features):
    """features (n, d), n >= 2 -> (mu (d,), sigma (d, d)) in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"gaussian_statistics needs features of shape (n, d) with n >= 2, got "
                         f"{features.shape}")
    if not np.all(np.isfinite(features)):
        raise ValueError("gaussian_statistics: the features contain NaN or infinity")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrtm(a):
    """Principal square root, or None when scipy fails or returns non-finite values."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # scipy warns on singular input; we check finiteness
            root = scipy.linalg.sqrtm(a)
    except (np.linalg.LinAlgError, ValueError):
        return None
    return root if np.all(np.isfinite(root)) else None


def _check(mu1, sigma1, mu2, sigma2):
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.ndim != 1 or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"frechet_distance: expected mu (d,) and sigma (d, d) for both Gaussians, "
                         f"got mu {mu1.shape}, {mu2.shape} and sigma {sigma1.shape}, {sigma2.shape}")
    for name, a in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"frechet_distance: {name} contains NaN or infinity")
    return mu1, sigma1, mu2, sigma2


def frechet_distance_details(mu1, sigma1, mu2, sigma2, eps=1e-6) -> dict:
    """The distance and how it was obtained: {distance, mean_term, trace_term, eps_added,
    max_imaginary} (max_imaginary: the largest |imaginary part| on the root's diagonal)."""
    mu1, sigma1, mu2, sigma2 = _check(mu1, sigma1, mu2, sigma2)
    root, eps_added = _sqrtm(sigma1 @ sigma2), False
    if root is None:
        offset = np.eye(sigma1.shape[0]) * eps
        root, eps_added = _sqrtm((sigma1 + offset) @ (sigma2 + offset)), True
        if root is None:
            raise FloatingPointError("frechet_distance: the matrix square root failed even with "
                                     f"eps = {eps} added to the diagonals; check the covariances")
    max_imag = float(np.max(np.abs(np.diagonal(root).imag))) if np.iscomplexobj(root) else 0.0
    if max_imag > IMAGINARY_TOLERANCE:
        warnings.warn(f"frechet_distance: the square root of S1 S2 has imaginary parts up to "
                      f"{max_imag:.3g} on its diagonal (the covariances are badly conditioned); "
                      f"using the real part", RuntimeWarning, stacklevel=2)
    diff = mu1 - mu2
    mean_term = float(diff @ diff)
    trace_term = float(np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(root.real))
    return {"distance": mean_term + trace_term, "mean_term": mean_term, "trace_term": trace_term,
            "eps_added": eps_added, "max_imaginary": max_imag}


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6) -> float:
    """|mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)) (see the module docstring)."""
    return frechet_distance_details(mu1, sigma1, mu2, sigma2, eps)["distance"]
