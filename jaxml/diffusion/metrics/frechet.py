"""Statistics that compare two feature sets: Fréchet distance, KID, k-NN precision/recall, copies.

Everything here works on (N, F) feature arrays (any feature network, or raw
pixels) in float64 numpy; nothing knows which network made them.

* `frechet_distance` of Gaussians fitted by `feature_statistics` (FID/FD).
* `kid`: the Kernel Inception Distance of Bińkowski et al. 2018, the
  unbiased MMD² with the cubic polynomial kernel, with its standard error.
* `precision_recall`: improved precision and recall of Kynkäänniemi et al.
  2019 (k-NN balls in feature space).
* `memorization_rate`: the share of samples closer to a training example
  than real held-out examples almost ever are.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any


def feature_statistics(features: Array) -> tuple[np.ndarray, np.ndarray]:
    """(N, F) features -> (mu (F,), sigma (F, F)) in float64; sigma is the unbiased covariance."""
    features = _check_features(features, "features", min_rows=2)
    mu = features.mean(axis=0)
    sigma = np.atleast_2d(np.cov(features, rowvar=False))
    return mu, sigma


def _check_features(features: Array, name: str, min_rows: int = 1) -> np.ndarray:
    features = np.asarray(features, np.float64)
    if features.ndim != 2:
        raise ValueError(f"{name} must be (N, F), got shape {features.shape}")
    if features.shape[0] < min_rows:
        raise ValueError(
            f"{name}: need at least {min_rows} feature vectors, got {features.shape[0]}"
        )
    if not np.all(np.isfinite(features)):
        raise ValueError(f"{name} contain NaN or Inf (are the images finite?)")
    return features


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative roundoff eigenvalues -> 0)."""
    eigvals, eigvecs = np.linalg.eigh(matrix)
    return (eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))) @ eigvecs.T


def frechet_distance(mu1: Array, sigma1: Array, mu2: Array, sigma2: Array) -> float:
    """Fréchet distance ``||mu1 - mu2||² + tr(S1) + tr(S2) - 2 tr((S1 S2)^½)`` between Gaussians.

    The usual implementation calls scipy.linalg.sqrtm on the non-symmetric
    product S1 S2, which returns tiny imaginary parts and fails on singular
    covariances. Here tr((S1 S2)^½) is computed as tr((S1^½ S2 S1^½)^½): the
    same eigenvalues, but of a symmetric PSD matrix, so `eigh` is exact and
    stable, and nothing is complex. Returns a Python float ≥ 0.
    """
    mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"means must be vectors of one length, got {mu1.shape} and {mu2.shape}")
    dim = mu1.shape[0]
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (dim, dim):
            raise ValueError(f"{name} must be ({dim}, {dim}) to match the means, got {sigma.shape}")
    for name, value in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name} contains NaN or Inf")
    # Covariances from np.cov are symmetric up to roundoff; make them exactly so for eigh.
    sigma1 = 0.5 * (sigma1 + sigma1.T)
    sigma2 = 0.5 * (sigma2 + sigma2.T)
    sqrt1 = _psd_sqrt(sigma1)
    middle = sqrt1 @ sigma2 @ sqrt1
    eigvals = np.linalg.eigvalsh(0.5 * (middle + middle.T))
    trace_covmean = np.sqrt(np.clip(eigvals, 0.0, None)).sum()
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_covmean
    # FD is a squared distance; roundoff can leave identical statistics at -1e-12.
    return float(max(distance, 0.0))


def frechet_distance_of_features(features1: Array, features2: Array) -> float:
    """`frechet_distance` of the Gaussians fitted to two (N, F) feature sets."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


# -----------------------------------------------------------------------------
# KID: unbiased MMD² with the polynomial kernel (x·y / F + 1)³.
# -----------------------------------------------------------------------------


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: Array, y: Array) -> float:
    """Unbiased MMD² between two feature sets with KID's kernel k(a, b) = (a·b / F + 1)³.

    ``mean_{i≠j} k(x_i, x_j) + mean_{i≠j} k(y_i, y_j) - 2 mean_{i,j} k(x_i, y_j)``
    (the U-statistic: diagonal terms left out, so its expectation is the
    population MMD², 0 for equal distributions; single values can be < 0).
    """
    x, y = _check_features(x, "x", 2), _check_features(y, "y", 2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y need the same feature size, got {x.shape} and {y.shape}")
    m, n = len(x), len(y)
    kxx, kyy, kxy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2.0 * kxy.mean()
    )


def kid(
    features: Array,
    reference: Array,
    *,
    subset_size: int = 1000,
    min_subsets: int = 4,
    max_reference: int = 10_000,
    seed: int = 0,
) -> dict:
    """Kernel Inception Distance of `features` (samples) against `reference`, with its s.e.

    The samples are shuffled and cut into B disjoint subsets of m =
    min(subset_size, N // min_subsets) rows; each subset's unbiased MMD² is
    taken against the whole reference set (at most `max_reference` rows, a
    fixed random subset beyond that): mean_{i≠j} k(x_i, x_j) + mean_{i≠j}
    k(y_i, y_j) - 2 mean k(x_i, y_j). KID is the mean of the B estimates and
    `kid_se` their standard deviation / √B. Given the reference set the B
    estimates are independent and unbiased, so KID's expectation does not
    depend on N (unlike FD's) and kid_se is the standard error of the
    reported number due to the samples.

    Returns {"kid", "kid_se", "kid_subsets" (B), "kid_subset_size" (m)}.
    """
    features = _check_features(features, "features", 2 * min_subsets)
    reference = _check_features(reference, "reference", 2)
    if features.shape[1] != reference.shape[1]:
        raise ValueError(
            f"features and reference need the same size, got {features.shape} and {reference.shape}"
        )
    rng = np.random.default_rng(seed)
    if len(reference) > max_reference:
        reference = reference[rng.choice(len(reference), max_reference, replace=False)]
    size = min(subset_size, len(features) // min_subsets)
    num_subsets = len(features) // size
    order = rng.permutation(len(features))
    n_ref = len(reference)
    kyy = 0.0
    for start in range(0, n_ref, 2048):  # row blocks: a 50k reference never sits in memory
        block = _polynomial_kernel(reference[start : start + 2048], reference)
        kyy += block.sum() - np.trace(block[:, start : start + 2048])
    kyy /= n_ref * (n_ref - 1)
    values = []
    for b in range(num_subsets):
        x = features[order[b * size : (b + 1) * size]]
        kxx = _polynomial_kernel(x, x)
        values.append(
            (kxx.sum() - np.trace(kxx)) / (size * (size - 1))
            + kyy
            - 2.0 * _polynomial_kernel(x, reference).mean()
        )
    values = np.asarray(values)
    return {
        "kid": float(values.mean()),
        "kid_se": float(values.std(ddof=1) / np.sqrt(num_subsets)),
        "kid_subsets": int(num_subsets),
        "kid_subset_size": int(size),
    }


# -----------------------------------------------------------------------------
# Nearest neighbours: k-NN precision/recall, memorisation.
# -----------------------------------------------------------------------------


def _pairwise_distances(x: np.ndarray, y: np.ndarray, max_block: int = 2**23):
    """Yields (start, (rows, len(y)) Euclidean distances) row block by row block; blocks hold
    at most `max_block` distances (64 MiB in float64), so memory does not grow with N."""
    chunk = max(1, min(len(x), max_block // max(len(y), 1)))
    y_sq = (y * y).sum(1)
    for start in range(0, len(x), chunk):
        block = x[start : start + chunk]
        sq = (block * block).sum(1)[:, None] + y_sq[None, :] - 2.0 * block @ y.T
        yield start, np.sqrt(np.clip(sq, 0.0, None))


def nearest_distances(x: Array, y: Array, k: int = 1, *, exclude_self: bool = False) -> np.ndarray:
    """(len(x),) distance from each x to its k-th nearest row of y (k = 1: the nearest).

    exclude_self: x is y, and a row's zero distance to itself is not counted.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    kth = k if exclude_self else k - 1
    if kth >= len(y):
        raise ValueError(f"k={k} needs more than {len(y)} reference rows")
    out = np.empty(len(x))
    for start, d in _pairwise_distances(x, y):
        out[start : start + len(d)] = np.partition(d, kth, axis=1)[:, kth]
    return out


def _share_inside_balls(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> float:
    """Share of `points` inside at least one ball (centres[i], radii[i])."""
    inside = np.zeros(len(points), bool)
    for start, d in _pairwise_distances(points, centres):
        inside[start : start + len(d)] = np.any(d <= radii[None, :], axis=1)
    return float(inside.mean())


def precision_recall(features: Array, reference: Array, k: int = 3) -> dict:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN balls.

    The real manifold is the union of balls around each reference row with
    radius the distance to its k-th nearest other reference row; likewise the
    generated manifold. precision = share of samples inside the real manifold
    (are samples realistic?); recall = share of reference rows inside the
    generated manifold (is the data's variety covered?). k = 3 as in the paper.
    """
    features = _check_features(features, "features", k + 1)
    reference = _check_features(reference, "reference", k + 1)
    real_radii = nearest_distances(reference, reference, k, exclude_self=True)
    fake_radii = nearest_distances(features, features, k, exclude_self=True)
    return {
        "precision": _share_inside_balls(features, reference, real_radii),
        "recall": _share_inside_balls(reference, features, fake_radii),
    }


def memorization_rate(
    samples: Array, train: Array, held_out: Array, *, quantile: float = 0.05
) -> dict:
    """Share of samples that sit closer to a training example than real unseen data does.

    For every held-out real example (never trained on) take its distance to
    the nearest training example; the threshold τ is the `quantile` (default
    5 %) of those distances. The memorisation rate is the share of samples
    whose nearest training example is closer than τ. A model that draws new
    examples from the data distribution scores about `quantile` (that is the
    base rate: 5 % of real unseen data is "this close" too); a model that
    copies training examples scores up to 1. Use pixel space (or any space where
    a copy is close): e.g. images flattened to (N, H·W·C).

    Returns {"memorization_rate", "memorization_base_rate" (= quantile),
    "memorization_threshold" (τ)}.
    """
    samples = _check_features(samples, "samples")
    train = _check_features(train, "train")
    held_out = _check_features(held_out, "held_out")
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    threshold = float(np.quantile(nearest_distances(held_out, train), quantile))
    rate = float(np.mean(nearest_distances(samples, train) < threshold))
    return {
        "memorization_rate": rate,
        "memorization_base_rate": quantile,
        "memorization_threshold": threshold,
    }
