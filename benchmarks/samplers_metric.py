"""benchmarks/samplers.py, the metric: sliced Wasserstein-2 over fixed random projections,
per chunk of samples, the "on data" fraction for a finite dataset, and paired verdicts
between samplers over the chunks."""

from __future__ import annotations

import numpy as np

NUM_PROJECTIONS = 256  # at most; 32 per dimension in low dimension


def projections(dim: int, seed: int = 123) -> np.ndarray:
    """(num, dim) fixed random unit directions; 64 suffice to cover a circle in 2-D."""
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(min(NUM_PROJECTIONS, 32 * dim), dim))
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def sliced_w2(a: np.ndarray, b: np.ndarray, proj: np.ndarray) -> float:
    """SW2 between equal-size sets: RMS over projections of the sorted-quantile distance."""
    pa = np.sort(proj @ a.T, axis=1)  # (projections, samples): sort along contiguous rows
    pb = np.sort(proj @ b.T, axis=1)
    return float(np.sqrt(np.mean((pa - pb) ** 2)))


def chunked_sw2(samples, truth_chunks, proj):
    r = len(truth_chunks)
    chunks = np.split(np.asarray(samples, np.float64), r)
    return np.array([sliced_w2(c, t, proj) for c, t in zip(chunks, truth_chunks)])


def on_data_radius(data: np.ndarray) -> float:
    """1% of the median distance from a data point to its nearest other data point."""
    num_data = len(data)
    nn = np.sqrt(
        np.min(
            np.sum((data[:, None] - data[None]) ** 2, -1) + np.diag(np.full(num_data, np.inf)),
            axis=1,
        )
    )
    return 0.01 * float(np.median(nn))


def on_data_fraction(samples: np.ndarray, data: np.ndarray, radius: float) -> float:
    """Fraction of samples within `radius` of a data point."""
    dist = np.sqrt(
        np.maximum(
            np.sum(samples**2, 1)[:, None] - 2 * samples @ data.T + np.sum(data**2, 1)[None],
            0,
        )
    ).min(1)
    return float(np.mean(dist < radius))


def verdict(a_rows, b_rows, t_threshold=3.0):
    """Per matched NFE: 'better'/'worse'/'tie' of a vs b from paired per-chunk differences.

    Paired, because both saw the same latents and true chunks; |t| > 3 (about
    2% two-sided with 8 chunks) keeps the many comparisons from crying wolf.
    """
    by_nfe = {r["nfe"]: r for r in b_rows}
    verdicts = {}
    for r in a_rows:
        if r["nfe"] not in by_nfe:
            continue
        diff = np.asarray(r["per_chunk"]) - np.asarray(by_nfe[r["nfe"]]["per_chunk"])
        t = diff.mean() / max(diff.std(ddof=1) / np.sqrt(len(diff)), 1e-12)
        verdicts[r["nfe"]] = "better" if t < -t_threshold else "worse" if t > t_threshold else "tie"
    return verdicts
