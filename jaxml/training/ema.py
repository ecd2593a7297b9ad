"""EMA decay schedules for `make_train_step(ema_decay=...)`.

The step applies ema ← β·ema + (1 - β)·params after each optimizer update,
with β = ema_decay(state.step) and state.step the number of updates done
before this one.

EDM (Karras et al. 2022, NVlabs/edm training/training_loop.py) sets β from a
half-life measured in training images, with a ramp-up that caps the half-life
at a fraction of the images seen so far, so early weights are forgotten fast:

    cur_nimg          = step · batch_size          (images seen before this update)
    halflife_nimg     = min(halflife_kimg · 1000, rampup_ratio · cur_nimg)
    β                 = 0.5 ** (batch_size / max(halflife_nimg, 1e-8))

At step 0 the half-life is 0, so β = 0 and the EMA starts as a copy of the
first updated params. CIFAR-10 DDPM++: half-life 500 kimg, ramp-up 0.05.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def edm_ema_decay(
    step, batch_size: int, ema_halflife_kimg: float = 500.0, ema_rampup_ratio: float | None = 0.05
) -> jax.Array:
    """EDM's EMA β for the update after `step` updates; jit-friendly (step may be traced).

    Args:
      step: number of optimizer updates done so far (int, or a traced int array).
      batch_size: global batch size (images per update).
      ema_halflife_kimg: half-life of the EMA in thousands of images.
      ema_rampup_ratio: cap the half-life at this fraction of the images seen;
        None turns the ramp-up off.

    Returns:
      float32 scalar β in [0, 1).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    if ema_halflife_kimg < 0:
        raise ValueError(f"ema_halflife_kimg must be >= 0, got {ema_halflife_kimg}.")
    if ema_rampup_ratio is not None and ema_rampup_ratio < 0:
        raise ValueError(f"ema_rampup_ratio must be >= 0 or None, got {ema_rampup_ratio}.")
    # float32 before multiplying: step · batch_size overflows int32 on long runs.
    cur_nimg = jnp.asarray(step, jnp.float32) * batch_size
    halflife_nimg = jnp.asarray(ema_halflife_kimg * 1000.0, jnp.float32)
    if ema_rampup_ratio is not None:
        halflife_nimg = jnp.minimum(halflife_nimg, cur_nimg * ema_rampup_ratio)
    return jnp.power(0.5, batch_size / jnp.maximum(halflife_nimg, 1e-8))


def make_edm_ema_decay(
    batch_size: int, ema_halflife_kimg: float = 500.0, ema_rampup_ratio: float | None = 0.05
) -> Callable[[jax.Array], jax.Array]:
    """`step -> β` for `make_train_step(ema_decay=...)`, with EDM's schedule."""
    edm_ema_decay(0, batch_size, ema_halflife_kimg, ema_rampup_ratio)  # validate now
    return lambda step: edm_ema_decay(step, batch_size, ema_halflife_kimg, ema_rampup_ratio)


def ema_decay_from_halflife_steps(halflife_steps: float) -> float:
    """Constant β whose EMA halves the weight of old params every `halflife_steps` updates."""
    if not halflife_steps > 0:
        raise ValueError(f"halflife_steps must be positive, got {halflife_steps}.")
    return 0.5 ** (1.0 / halflife_steps)


def rampup_ratio_for_sigma_rel(sigma_rel: float) -> float:
    """EDM ramp-up ratio r whose EMA (while r · images seen is below the half-life cap) has
    the EDM2 relative width `sigma_rel` (Karras et al. 2024): β_t = 0.5^(1/(r·t)) ≈
    1 − ln 2/(r·t) is the power-function EMA β_t = (1 − 1/t)^(γ+1) with γ + 1 = ln 2 / r.
    EDM's r = 0.05 is σ_rel ≈ 0.063."""
    from jaxml.training.posthoc_ema import sigma_rel_to_gamma

    return float(jnp.log(2.0) / (float(sigma_rel_to_gamma(sigma_rel)) + 1.0))
