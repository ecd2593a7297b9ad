"""PFGM++ (Xu et al. 2023): perturbation kernel, prior and exact posterior mean.

With augmentation dimension D and data dimension N, the perturbation kernel at
radius r = σ·sqrt(D) is p_r(x|y) ∝ (‖x-y‖² + r²)^{-(N+D)/2}: a multivariate
Student-t with D degrees of freedom and scale σ. We draw it as

    n = σ · ε · sqrt(D / g),   ε ~ N(0, I_N),  g ~ χ²_D,

which equals the paper's R·u construction (R² = r²·b/(1-b), b ~ Beta(N/2, D/2))
without its clipping of b. ‖n‖²/(N σ²) then follows the F(N, D) distribution.
D = None means D → ∞: Gaussian noise, i.e. EDM. Everything else in training
(preconditioning, σ distribution, loss weight) and the σ-ODE used by the
samplers is unchanged.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Array = jax.Array


def _check_D(D: float | None) -> None:
    # A traced D (one compiled program for several D) is accepted unchecked.
    if D is not None and not isinstance(D, jax.core.Tracer) and not D > 0:
        raise ValueError(
            f"PFGM++ augmentation dimension D must be positive or None (EDM), got {D}."
        )


def _per_example(v, batch: int, ndim: int, dtype) -> Array:
    """σ given as a scalar or (batch,) -> (batch, 1, ..., 1)."""
    v = jnp.broadcast_to(jnp.asarray(v, dtype), (batch,))
    return v.reshape((batch,) + (1,) * (ndim - 1))


# Integer D up to this: χ²_D as a sum (no loop); larger or traced D: jax.random.gamma.
MAX_SUM_DEGREES = 8192


def chi_square(key: Array, D, shape) -> Array:
    """float32 χ²_D draws of `shape`.

    For a Python integer D ≤ MAX_SUM_DEGREES: -2 Σ log U over ⌊D/2⌋ uniforms (a sum of
    exponentials is Gamma(⌊D/2⌋)), plus z² for odd D: exact, and one fused reduction. The
    general path, 2·Gamma(D/2) by jax.random.gamma, is a rejection-sampling while loop that
    cost ~50 ms per train step on a CPU (more than the whole 8x8 U-Net's forward pass).
    """
    static = not isinstance(D, jax.core.Tracer) and float(D).is_integer()
    if not (static and 1 <= D <= MAX_SUM_DEGREES):
        return 2.0 * jax.random.gamma(key, jnp.asarray(D, jnp.float32) / 2.0, shape)
    D = int(D)
    k_exp, k_odd = jax.random.split(key)
    g = jnp.zeros(shape, jnp.float32)
    if D >= 2:
        tiny = jnp.finfo(jnp.float32).tiny  # log(0) excluded
        u = jax.random.uniform(k_exp, (*shape, D // 2), jnp.float32, minval=tiny, maxval=1.0)
        g = -2.0 * jnp.sum(jnp.log(u), axis=-1)
    if D % 2:
        g = g + jnp.square(jax.random.normal(k_odd, shape, jnp.float32))
    return g


def sample_noise(key: Array, shape, sigma, D: float | None = None, dtype=jnp.float32) -> Array:
    """Noise n with the PFGM++ kernel at scale σ (scalar or per example, shape[0]).

    One χ²_D draw per example (the radius is shared by all N coordinates of an
    example), so examples are independent and the batch axis can be sharded.
    """
    _check_D(D)
    k_dir, k_rad = jax.random.split(key)
    sigma = _per_example(sigma, shape[0], len(shape), dtype)
    eps = jax.random.normal(k_dir, shape, dtype)
    if D is None:
        return sigma * eps
    # The scale sqrt(D/g) tends to 1 as D → ∞.
    g = chi_square(k_rad, D, (shape[0],)).astype(dtype)
    scale = jnp.sqrt(D / g).reshape((shape[0],) + (1,) * (len(shape) - 1))
    return sigma * eps * scale


def perturb(key: Array, y: Array, sigma, D: float | None = None) -> Array:
    """y + n, n drawn from the PFGM++ kernel at σ (Gaussian N(0, σ²I) when D is None)."""
    return y + sample_noise(key, y.shape, sigma, D, y.dtype)


def prior(key: Array, shape, sigma_max: float, D: float | None = None, dtype=jnp.float32) -> Array:
    """Latents at σ_max (r_max = σ_max·sqrt(D)): the samplers' starting point."""
    return sample_noise(key, tuple(shape), sigma_max, D, dtype)


def log_kernel(sq_dist: Array, sigma, N: int, D: float | None = None) -> Array:
    """log p_σ(x|y) up to a constant in y, from ‖x-y‖²; σ broadcasts against sq_dist."""
    _check_D(D)
    if D is None:
        return -0.5 * sq_dist / sigma**2
    # -(N+D)/2 · log(‖x-y‖² + r²), with the constant log r² removed (log1p keeps
    # precision when ‖x-y‖² ≪ r²; the constant cancels in any softmax over y).
    return -0.5 * (N + D) * jnp.log1p(sq_dist / (sigma**2 * D))


def pairwise_sq_dist(x: Array, data: Array) -> Array:
    """‖x_b - y_i‖² for flat x (batch, N) and data (n, N) -> (batch, n).

    By the expansion ‖x‖² - 2x·y + ‖y‖² (no (batch, n, N) intermediate). Its
    absolute error, ~1e-7·‖x‖² in float32, only matters where the softmax over y
    is one-hot anyway (σ² far below the gaps between squared distances).
    """
    x2 = jnp.sum(x * x, axis=-1, keepdims=True)
    y2 = jnp.sum(data * data, axis=-1)
    xy = jnp.einsum("bd,nd->bn", x, data, precision=jax.lax.Precision.HIGHEST)
    # Rounding can make tiny distances negative.
    return jnp.maximum(x2 - 2.0 * xy + y2, 0.0)


def posterior_weights(
    x: Array, sigma, data: Array, D: float | None = None, log_prior: Array | None = None
) -> Array:
    """Softmax weights w_{b,i} ∝ π_i p_σ(x_b | y_i) over a finite dataset, (batch, n)."""
    batch = x.shape[0]
    xf = x.reshape(batch, -1)
    yf = data.reshape(data.shape[0], -1).astype(x.dtype)
    N = xf.shape[1]
    sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (batch,))[:, None]
    logits = log_kernel(pairwise_sq_dist(xf, yf), sigma, N, D)
    if log_prior is not None:
        logits = logits + log_prior
    return jax.nn.softmax(logits, axis=-1)


def posterior_mean(
    x: Array, sigma, data: Array, D: float | None = None, log_prior: Array | None = None
) -> Array:
    """E[y | x, r = σ·sqrt(D)] for y uniform on `data` (n, ...): the exact denoiser.

    Weights are computed in log space (a softmax), so they stay finite at σ → 0
    and for large N + D. x: (batch, ...) with data's trailing shape; σ scalar or
    (batch,).
    """
    w = posterior_weights(x, sigma, data, D, log_prior)
    yf = data.reshape(data.shape[0], -1).astype(x.dtype)
    mean = jnp.einsum("bn,nd->bd", w, yf, precision=jax.lax.Precision.HIGHEST)
    return mean.reshape(x.shape)


def stf_target(noisy: Array, sigma, reference: Array, D: float | None = None) -> Array:
    """Stable Target Field: the posterior mean of y over a reference batch.

    Replaces each example's own clean y as the regression target; the reference
    must contain that clean example (e.g. the training batch itself). Lower
    variance than y at mid-range σ; equal to y as σ → 0.
    """
    return posterior_mean(noisy, sigma, reference, D)


def restart_jump(
    key: Array, x: Array, sigma_from: float, sigma_to: float, D: float, S_noise: float = 1.0
) -> Array:
    """Forward jump from radius σ_from·√D to σ_to·√D, as in the official Restart code.

    The augmented point (x, z), z uniform on the D-sphere of radius r_from, moves
    along a uniformly random direction of R^{N+D} until ‖z‖ = r_to; x takes the
    N-part of that move. For D → ∞ this tends to x + sqrt(σ_to² - σ_from²)·ε.
    It is not an exact transition of the PFGM++ kernels: for a point mass, x ~
    p_{σ_from} jumps to a law that matches p_{σ_to} closely once D ≳ N (KS test
    at 20k draws: N=16, D=32 and N=48, D=128 pass) but not at small D (N=16,
    D=8: mean ‖x‖² about 2% high).
    """
    batch = x.shape[0]
    N = math.prod(x.shape[1:])
    D = int(D)
    k_z, k_dir = jax.random.split(key)
    r_from = sigma_from * math.sqrt(D)
    r_to = sigma_to * math.sqrt(D)
    z = jax.random.normal(k_z, (batch, D), x.dtype)
    z = r_from * z / jnp.linalg.norm(z, axis=1, keepdims=True)
    direction = jax.random.normal(k_dir, (batch, N + D), x.dtype)
    direction = direction / jnp.linalg.norm(direction[:, N:], axis=1, keepdims=True)
    dot = jnp.sum(z * direction[:, N:], axis=1)
    # Positive root of ‖z + t·dir_D‖² = r_to². (The official code takes the other
    # root; dir_N is symmetric and independent of the sign, so the law is the same.)
    move = -dot + jnp.sqrt(dot**2 + (r_to**2 - r_from**2))
    move = move.reshape((batch,) + (1,) * (x.ndim - 1))
    return x + S_noise * move * direction[:, :N].reshape(x.shape)
