"""MSE / PSNR / SSIM of jaxml.tasks.frame_metrics against closed forms and a NumPy loop.

The NumPy SSIM walks every 11x11 window explicitly (Wang et al. 2004 with a Gaussian
window, σ = 1.5, population statistics: the definition scikit-image uses with
gaussian_weights=True, use_sample_covariance=False), independent of our separable filter.
"""

import numpy as np
import pytest

from jaxml.tasks import frame_metrics as fm


def numpy_ssim(x, y, data_range=1.0, size=11, sigma=1.5):
    """SSIM of two (H, W) images by explicit windows."""
    g1 = np.exp(-0.5 * ((np.arange(size) - (size - 1) / 2) / sigma) ** 2)
    w = np.outer(g1, g1)
    w /= w.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    h, wd = x.shape
    vals = []
    for i in range(h - size + 1):
        for j in range(wd - size + 1):
            a, b = x[i : i + size, j : j + size], y[i : i + size, j : j + size]
            mx, my = np.sum(w * a), np.sum(w * b)
            vx, vy = np.sum(w * (a - mx) ** 2), np.sum(w * (b - my) ** 2)
            cxy = np.sum(w * (a - mx) * (b - my))
            vals.append(
                ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
            )
    return float(np.mean(vals))


def test_ssim_matches_numpy_windows():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(3, 20, 18, 2)).astype(np.float32)
    y = np.clip(x + rng.normal(scale=0.2, size=x.shape), 0, 1).astype(np.float32)
    got = np.asarray(fm.ssim(x, y))
    ref = [np.mean([numpy_ssim(x[n, ..., c], y[n, ..., c]) for c in range(2)]) for n in range(3)]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    assert 0.05 < got.min() < got.max() < 0.95  # a real, non-trivial comparison


def test_ssim_known_cases():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(2, 16, 16, 1)).astype(np.float32)
    np.testing.assert_allclose(fm.ssim(x, x), 1.0, rtol=1e-6)
    # Constant images a and b: variances vanish, SSIM = (2ab + C1) / (a² + b² + C1).
    a, b = 0.3, 0.7
    c1 = 0.01**2
    got = fm.ssim(np.full((1, 16, 16, 1), a, np.float32), np.full((1, 16, 16, 1), b, np.float32))
    np.testing.assert_allclose(got, (2 * a * b + c1) / (a * a + b * b + c1), rtol=1e-4)
    # An image against its negative is strongly anti-correlated: SSIM < 0.
    assert float(fm.ssim(x, 1.0 - x)[0]) < 0


def test_psnr_and_mse_closed_form():
    x = np.zeros((2, 3, 8, 8, 1), np.float32)
    y = x + 0.1
    np.testing.assert_allclose(fm.mse(y, x), 0.01, rtol=1e-5)
    np.testing.assert_allclose(fm.psnr(y, x), 20.0, rtol=1e-5)  # 10 log10(1 / 0.01)
    np.testing.assert_allclose(fm.psnr(y, x, data_range=255.0), 10 * np.log10(255.0**2 / 0.01))
    assert fm.psnr(x, x).shape == (2, 3)


def test_ssim_bad_shapes():
    with pytest.raises(ValueError, match="arrays of one shape"):
        fm.ssim(np.zeros((2, 8, 8, 1)), np.zeros((2, 8, 8, 2)))
