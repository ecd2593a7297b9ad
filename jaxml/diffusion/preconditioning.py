"""Denoiser preconditioning: VP, VE and EDM (Karras et al. 2022, Table 1).

A network F(x_in, c_noise, labels) becomes a denoiser

    D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x; c_noise(σ)).

Each preconditioner also carries its training σ distribution and loss weight
λ(σ), so that a recipe is one object. All coefficient methods take σ of any
shape and return arrays of the same shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
# net_fn(x_in, c_noise, labels) -> F; x_in (batch, ...), c_noise (batch,).
NetFn = Callable[[Array, Array, Array | None], Array]


def _expand_to(v: Array, x: Array) -> Array:
    """Broadcasts a per-example (batch,) or scalar value against x (batch, ...)."""
    v = jnp.asarray(v, x.dtype)
    if v.ndim == 0:
        return v
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


@dataclasses.dataclass(frozen=True)
class EDMPrecond:
    """EDM: unit-variance network input and target at every σ."""

    sigma_data: float = 0.5
    P_mean: float = -1.2
    P_std: float = 1.2

    def c_skip(self, sigma):
        sd2 = self.sigma_data**2
        return sd2 / (sigma**2 + sd2)

    def c_out(self, sigma):
        return sigma * self.sigma_data / jnp.sqrt(sigma**2 + self.sigma_data**2)

    def c_in(self, sigma):
        return 1.0 / jnp.sqrt(sigma**2 + self.sigma_data**2)

    def c_noise(self, sigma):
        return jnp.log(sigma) / 4.0

    def sigma_from_c_noise(self, c_noise):
        return jnp.exp(4.0 * c_noise)

    def sample_sigma(self, key, shape, dtype=jnp.float32):
        """ln σ ~ N(P_mean, P_std²)."""
        return jnp.exp(self.P_mean + self.P_std * jax.random.normal(key, shape, dtype))

    def loss_weight(self, sigma):
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2


@dataclasses.dataclass(frozen=True)
class VPPrecond:
    """Variance preserving (DDPM++), expressed in the σ parametrisation of EDM."""

    beta_d: float = 19.9
    beta_min: float = 0.1
    M: int = 1000
    epsilon_t: float = 1e-5

    def sigma(self, t):
        """σ(t) = sqrt(exp(β_d t²/2 + β_min t) - 1)."""
        t = jnp.asarray(t)
        return jnp.sqrt(jnp.expm1(0.5 * self.beta_d * t**2 + self.beta_min * t))

    def sigma_inv(self, sigma):
        """t(σ): the positive root of β_d t²/2 + β_min t = ln(1 + σ²)."""
        sigma = jnp.asarray(sigma)
        return (
            jnp.sqrt(self.beta_min**2 + 2 * self.beta_d * jnp.log1p(sigma**2)) - self.beta_min
        ) / self.beta_d

    def c_skip(self, sigma):
        return jnp.ones_like(sigma)

    def c_out(self, sigma):
        return -sigma

    def c_in(self, sigma):
        return 1.0 / jnp.sqrt(sigma**2 + 1.0)

    def c_noise(self, sigma):
        return (self.M - 1) * self.sigma_inv(sigma)

    def sigma_from_c_noise(self, c_noise):
        return self.sigma(c_noise / (self.M - 1))

    def sample_sigma(self, key, shape, dtype=jnp.float32):
        """t ~ U(ε_t, 1), σ = σ(t)."""
        u = jax.random.uniform(key, shape, dtype)
        return self.sigma(1.0 + u * (self.epsilon_t - 1.0))

    def loss_weight(self, sigma):
        return 1.0 / sigma**2


@dataclasses.dataclass(frozen=True)
class VEPrecond:
    """Variance exploding (NCSN++)."""

    sigma_min: float = 0.02
    sigma_max: float = 100.0

    def c_skip(self, sigma):
        return jnp.ones_like(sigma)

    def c_out(self, sigma):
        return sigma

    def c_in(self, sigma):
        return jnp.ones_like(sigma)

    def c_noise(self, sigma):
        return jnp.log(0.5 * sigma)

    def sigma_from_c_noise(self, c_noise):
        return 2.0 * jnp.exp(c_noise)

    def sample_sigma(self, key, shape, dtype=jnp.float32):
        """σ log-uniform in [σ_min, σ_max]."""
        u = jax.random.uniform(key, shape, dtype)
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** u

    def loss_weight(self, sigma):
        return 1.0 / sigma**2


Preconditioner = EDMPrecond | VPPrecond | VEPrecond
PRECONDITIONERS = {"edm": EDMPrecond, "vp": VPPrecond, "ve": VEPrecond}


def get_preconditioner(precond: str | Preconditioner = "edm", **kwargs: Any) -> Preconditioner:
    """Returns a preconditioner from its name ("edm", "vp", "ve") or passes one through."""
    if not isinstance(precond, str):
        if kwargs:
            raise ValueError("Preconditioner options can only be given with a preconditioner name.")
        return precond
    try:
        cls = PRECONDITIONERS[precond.lower()]
    except KeyError:
        raise ValueError(
            f"Unknown preconditioner {precond!r}; expected one of {sorted(PRECONDITIONERS)}."
        ) from None
    return cls(**kwargs)


def precondition(
    precond: Preconditioner, net_fn: NetFn, x: Array, sigma: Array, labels: Array | None = None
) -> Array:
    """D(x; σ) = c_skip x + c_out F(c_in x; c_noise); σ scalar or (batch,)."""
    sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), x.shape[:1])
    F = net_fn(_expand_to(precond.c_in(sigma), x) * x, precond.c_noise(sigma), labels)
    return _expand_to(precond.c_skip(sigma), x) * x + _expand_to(
        precond.c_out(sigma), x
    ) * F.astype(x.dtype)


def make_denoiser(
    net_apply: Callable[..., Array],
    params: Any,
    precond: str | Preconditioner = "edm",
    labels: Array | None = None,
) -> Callable[[Array, Array], Array]:
    """Binds params (and labels) into a sampler-ready denoise_fn(x, sigma).

    net_apply(params, x_in, c_noise, labels) is the raw network, e.g. a Flax
    module's apply wrapped to this argument order.
    """
    precond = get_preconditioner(precond)

    def net_fn(x_in, c_noise, labels_):
        return net_apply(params, x_in, c_noise, labels_)

    def denoise_fn(x, sigma):
        return precondition(precond, net_fn, x, sigma, labels)

    return denoise_fn
