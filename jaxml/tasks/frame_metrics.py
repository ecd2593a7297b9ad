"""Per-frame image quality for video prediction: MSE, PSNR and SSIM (jit-able, any batch dims).

Frames are (..., H, W, C) floats with values in [0, data_range]. SSIM is Wang et al.
(2004) as in `tf.image.ssim` and scikit-image with `gaussian_weights=True,
use_sample_covariance=False`: an 11x11 Gaussian window with σ = 1.5 (shrunk to the frame
for frames under 11 pixels), K1 = 0.01, K2 = 0.03, population (co)variances, averaged
over the valid (unpadded) window positions and the channels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Mean squared error per frame: (..., H, W, C) -> (...)."""
    return jnp.mean(jnp.square(pred - target), axis=(-3, -2, -1))


def psnr(pred: jax.Array, target: jax.Array, data_range: float = 1.0) -> jax.Array:
    """10 log10(data_range² / MSE) per frame (MSE floored at 1e-10: identical frames give 100)."""
    return 10.0 * jnp.log10(data_range**2 / jnp.maximum(mse(pred, target), 1e-10))


def gaussian_window(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2.0
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _filter_valid(x: jax.Array, g: jax.Array) -> jax.Array:
    """Separable 'valid' filtering of (N, H, W) by the 1-D window g along H then W."""
    n, h, w = x.shape
    k = g.shape[0]
    x = jax.lax.conv_general_dilated(
        x[:, None],
        g.reshape(1, 1, k, 1),
        (1, 1),
        "VALID",
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
    )
    x = jax.lax.conv_general_dilated(
        x, g.reshape(1, 1, 1, k), (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW")
    )
    return x[:, 0]


def ssim(pred: jax.Array, target: jax.Array, data_range: float = 1.0) -> jax.Array:
    """Structural similarity per frame: (..., H, W, C) -> (...)."""
    if pred.shape != target.shape or pred.ndim < 3:
        raise ValueError(
            f"ssim needs two (..., H, W, C) arrays of one shape, got {pred.shape}, {target.shape}"
        )
    lead, (h, w, c) = pred.shape[:-3], pred.shape[-3:]
    size = min(SSIM_WINDOW, h, w)
    size -= 1 - size % 2  # odd
    g = jnp.asarray(gaussian_window(size, SSIM_SIGMA), jnp.float32)

    def planes(x):  # (..., H, W, C) -> (N, H, W)
        return jnp.moveaxis(x.astype(jnp.float32), -1, -3).reshape(-1, h, w)

    x, y = planes(pred), planes(target)
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    var_x = _filter_valid(x * x, g) - mu_x**2
    var_y = _filter_valid(y * y, g) - mu_y**2
    cov = _filter_valid(x * y, g) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return jnp.mean(s.reshape(lead + (c, -1)), axis=(-2, -1))
