"""Exact (ideal) denoisers: ground truth for samplers without a trained network.

A denoiser here is denoise_fn(x, sigma) -> E[y | x], x (batch, ...), σ scalar
or (batch,), the same interface the samplers take. With an exact denoiser a
sampler's error is its own (discretisation, or its noise schedule).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxml.diffusion import pfgmpp
from jaxml.diffusion.preconditioning import Preconditioner, get_preconditioner

Array = jax.Array
DenoiseFn = Callable[[Array, Array], Array]


def finite_dataset_denoiser(data: Array, D: float | None = None) -> DenoiseFn:
    """D(x; σ) = Σ_i w_i y_i for y uniform on data (n, ...); Gaussian or PFGM++ kernel.

    Gaussian (D=None): w = softmax(-‖x - y_i‖²/(2σ²)).
    PFGM++ (finite D): w_i ∝ (‖x - y_i‖² + σ²D)^{-(N+D)/2}.
    """
    data = jnp.asarray(data)

    def denoise_fn(x, sigma):
        return pfgmpp.posterior_mean(x, sigma, data, D)

    return denoise_fn


def _gmm_params(means, stds, weights):
    means = jnp.asarray(means, jnp.float32)
    K = means.shape[0]
    stds = jnp.broadcast_to(jnp.asarray(stds, jnp.float32), (K,))
    if weights is None:
        weights = jnp.full((K,), 1.0 / K, jnp.float32)
    weights = jnp.asarray(weights, jnp.float32)
    return means, stds, weights / jnp.sum(weights)


def gmm_denoiser(means: Array, stds: float | Array, weights: Array | None = None) -> DenoiseFn:
    """Exact denoiser of the isotropic mixture Σ_k π_k N(μ_k, s_k² I).

    D(x; σ) = Σ_k w_k(x) (σ² μ_k + s_k² x)/(s_k² + σ²), w_k ∝ π_k N(x; μ_k, (s_k²+σ²) I).
    means: (K, ...) with x's trailing shape; stds scalar or (K,); weights (K,).
    """
    means, stds, weights = _gmm_params(means, stds, weights)
    K = means.shape[0]
    mu = means.reshape(K, -1)
    log_pi = jnp.log(weights)
    s2 = stds**2

    def denoise_fn(x, sigma):
        batch = x.shape[0]
        xf = x.reshape(batch, -1)
        N = xf.shape[1]
        sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (batch,))
        var = s2[None, :] + sigma[:, None] ** 2  # (batch, K)
        sq_dist = pfgmpp.pairwise_sq_dist(xf, mu.astype(x.dtype))  # (batch, K)
        logits = log_pi - 0.5 * sq_dist / var - 0.5 * N * jnp.log(var)
        w = jax.nn.softmax(logits, axis=-1)
        # Σ_k w_k (σ² μ_k + s_k² x)/var_k, split into its x part and its μ part.
        x_coef = jnp.sum(w * s2 / var, axis=-1, keepdims=True)
        mu_part = jnp.einsum(
            "bk,kd->bd", w * (sigma[:, None] ** 2 / var), mu, precision=jax.lax.Precision.HIGHEST
        )
        return (x_coef * xf + mu_part).reshape(x.shape)

    return denoise_fn


def gmm_sample(
    key: Array, num: int, means: Array, stds: float | Array, weights: Array | None = None
) -> Array:
    """Draws num samples (num, ...) from the isotropic mixture."""
    means, stds, weights = _gmm_params(means, stds, weights)
    k_comp, k_eps = jax.random.split(key)
    comp = jax.random.choice(k_comp, means.shape[0], (num,), p=weights)
    eps = jax.random.normal(k_eps, (num,) + means.shape[1:])
    s = stds[comp].reshape((num,) + (1,) * (means.ndim - 1))
    return means[comp] + s * eps


def ideal_network(
    denoise_fn: DenoiseFn, precond: str | Preconditioner = "edm"
) -> Callable[..., Array]:
    """The F(x_in, c_noise, labels) that, preconditioned, reproduces denoise_fn.

    Solves c_skip x + c_out F(c_in x; c_noise) = D(x; σ) for F, recovering σ
    from c_noise and x from x_in = c_in x. Use it as a stand-in network, e.g.
    net_apply = lambda params, x_in, c_noise, labels: F(x_in, c_noise, labels).
    """
    precond = get_preconditioner(precond)

    def F(x_in, c_noise, labels=None):
        del labels
        sigma = precond.sigma_from_c_noise(c_noise)
        bshape = sigma.shape + (1,) * (x_in.ndim - sigma.ndim)
        x = x_in / precond.c_in(sigma).reshape(bshape)
        return (denoise_fn(x, sigma) - precond.c_skip(sigma).reshape(bshape) * x) / precond.c_out(
            sigma
        ).reshape(bshape)

    return F
