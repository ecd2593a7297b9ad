"""Discretization of a diagonal continuous-time SSM x' = Λx + B̃u.

Both rules give x_t = Λ̄ x_{t-1} + B̄ u_t with B̄ = γ ⊙ B̃ (γ scales each state's
row of B̃). We return the pair (Λ̄, γ) rather than B̄ so that a per-step Δ (one
Δ_t per time step, for irregular sampling) never materializes a (L, P, H) B̄:
the caller applies γ_t to B̃u_t instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

DISCRETIZATIONS = ("zoh", "bilinear")


def zoh(Lambda: jax.Array, Delta: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Zero-order hold: Λ̄ = exp(ΛΔ), γ = (Λ̄ - 1)/Λ.

    `expm1` keeps γ accurate when |ΛΔ| is small (Δ starts as low as 1e-3),
    where exp(ΛΔ) - 1 would cancel in float32.
    """
    z = Lambda * Delta
    return jnp.exp(z), jnp.expm1(z) / Lambda


def bilinear(Lambda: jax.Array, Delta: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Bilinear (Tustin): Λ̄ = (1 + ΔΛ/2)/(1 - ΔΛ/2), γ = Δ/(1 - ΔΛ/2)."""
    bl = 1.0 / (1.0 - 0.5 * Delta * Lambda)
    return bl * (1.0 + 0.5 * Delta * Lambda), bl * Delta


def discretize(
    Lambda: jax.Array, Delta: jax.Array, method: str = "zoh"
) -> tuple[jax.Array, jax.Array]:
    """(Λ̄, γ) for diagonal Λ (complex, (P,)) and step sizes Δ (broadcastable, e.g. (..., P))."""
    if method == "zoh":
        return zoh(Lambda, Delta)
    if method == "bilinear":
        return bilinear(Lambda, Delta)
    raise ValueError(f"Unknown discretization {method!r}; expected one of {DISCRETIZATIONS}.")


def discretize_zoh(
    Lambda: jax.Array, B_tilde: jax.Array, Delta: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Λ̄ (P,) and B̄ (P, H) by zero-order hold, as in the S5 paper."""
    Lambda_bar, gamma = zoh(Lambda, Delta)
    return Lambda_bar, gamma[..., None] * B_tilde


def discretize_bilinear(
    Lambda: jax.Array, B_tilde: jax.Array, Delta: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Λ̄ (P,) and B̄ (P, H) by the bilinear transform, as in the S5 paper."""
    Lambda_bar, gamma = bilinear(Lambda, Delta)
    return Lambda_bar, gamma[..., None] * B_tilde
