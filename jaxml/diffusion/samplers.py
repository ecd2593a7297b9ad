"""Samplers for the σ-ODE dx/dσ = (x - D(x; σ))/σ: Euler, Heun, EDM churn, Restart.

All samplers share one signature,

    sampler(denoise_fn, latents, sigmas, *, key=None, **options) -> (samples, info)

denoise_fn(x, sigma): x (batch, ...), sigma (batch,) -> estimate of clean x.
latents: (batch, ...), already at noise level sigmas[0] (e.g. pfgmpp.prior).
sigmas: decreasing (N+1,) schedule ending in 0, e.g. edm_sigmas(N).
info["nfe"]: the number of denoiser calls per sample (a Python int).

Heun, stochastic and restart run one lax.scan over a precomputed plan of
Heun steps (restart steps spliced in), then the final Euler step to σ = 0;
Euler is one lax.scan. The configuration is static, so each traces once under
jax.jit and compiles to one loop. Every operation is per example
except the optional particle-guidance term, so the batch axis may be sharded
over a mesh; XLA inserts the gathers that term needs. The same sampler covers
PFGM++: draw latents from pfgmpp.prior and use a PFGM++ denoiser (the σ-ODE is
the same); restart(D=...) also uses the PFGM++ forward jump.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxml.diffusion import pfgmpp

Array = jax.Array
DenoiseFn = Callable[[Array, Array], Array]
RestartInterval = tuple[int, int, float, float]  # (N_R, K, t_min, t_max)


def edm_sigmas(
    num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0
) -> Array:
    """EDM time steps t_i = (σ_max^{1/ρ} + i/(N-1)(σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ, then t_N = 0.

    Returns a float32 array of shape (num_steps + 1,).
    """
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps}.")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"Need 0 < sigma_min <= sigma_max, got {sigma_min} and {sigma_max}.")
    return jnp.asarray(
        np.append(_karras_steps_np(sigma_max, sigma_min, int(num_steps), rho), 0.0), jnp.float32
    )


def _karras_steps_np(t_start, t_end, num, rho):
    # Computed in float64 so that the schedule does not depend on the backend.
    if num == 1:
        return np.array([t_start], np.float64)
    frac = np.arange(num, dtype=np.float64) / (num - 1)
    return (t_start ** (1 / rho) + frac * (t_end ** (1 / rho) - t_start ** (1 / rho))) ** rho


def _karras_steps(t_start, t_end, num: int, rho: float) -> Array:
    """num EDM-spaced levels from t_start down to t_end (traced endpoints allowed)."""
    frac = jnp.arange(num, dtype=jnp.float32) / (num - 1)
    steps = (t_start ** (1 / rho) + frac * (t_end ** (1 / rho) - t_start ** (1 / rho))) ** rho
    # Exact endpoints: the restart jump and the snapped t_min use them as given.
    return steps.at[0].set(t_start).at[-1].set(t_end)


# ----------------------------------------------------------------------------
# Particle guidance.


def particle_repulsion(x: Array) -> Array:
    """-∇_{x_i} Σ_j k(x_i, x_j) for the RBF kernel k = exp(-‖x_i - x_j‖²/h).

    h = median pairwise squared distance / log(n - 1), held fixed (no gradient
    through it). Equals (2/h) Σ_j k_ij (x_i - x_j): it points away from nearby
    samples of the batch. Computed through n×n matrices only (no n×n×dim).
    """
    n = x.shape[0]
    if n < 3:
        raise ValueError(f"Particle guidance needs a batch of at least 3 samples, got {n}.")
    xf = x.reshape(n, -1).astype(jnp.float32)
    sq = pfgmpp.pairwise_sq_dist(xf, xf)
    iu = np.triu_indices(n, 1)
    h = jax.lax.stop_gradient(jnp.median(sq[iu]) / math.log(n - 1))
    h = jnp.maximum(h, 1e-12)
    k = jnp.exp(-sq / h)
    force = (2.0 / h) * (
        jnp.sum(k, axis=1, keepdims=True) * xf
        - jnp.matmul(k, xf, precision=jax.lax.Precision.HIGHEST)
    )
    return force.reshape(x.shape).astype(x.dtype)


def _with_particle_guidance(denoise_fn: DenoiseFn, strength: float) -> DenoiseFn:
    """Adds α·σ²·(repulsion) to D, i.e. α·(repulsion) to the score (D - x)/σ².

    The σ² factor makes the drift term grow with σ as in Particle Guidance;
    strength=0 returns denoise_fn unchanged.
    """
    if not strength:
        return denoise_fn

    def guided(x, sigma):
        s2 = (sigma**2).reshape((-1,) + (1,) * (x.ndim - 1))
        return denoise_fn(x, sigma) + strength * s2 * particle_repulsion(x)

    return guided


# ----------------------------------------------------------------------------
# Classifier-free guidance.


def classifier_free_guidance(
    denoise_with_labels: Callable[[Array, Array, Array], Array],
    labels: Array,
    guidance: float,
    *,
    null_label: int = -1,
) -> DenoiseFn:
    """denoise_fn(x, σ) = D_u + w·(D_c − D_u) (Ho & Salimans 2022), for any sampler here.

    denoise_with_labels(x, σ, labels) is a class-conditional denoiser; D_c uses `labels`,
    D_u the null class `null_label` (trained by label dropout). w = guidance (a Python
    float): 1 is the plain conditional denoiser (one call), 0 the unconditional one, w > 1
    sharpens classes. Unless w = 1, both run as one call on the doubled batch.
    """
    guidance = float(guidance)
    labels = jnp.asarray(labels)
    null = jnp.full_like(labels, null_label)
    if guidance == 1.0:
        return lambda x, sigma: denoise_with_labels(x, sigma, labels)

    def guided(x, sigma):
        both = denoise_with_labels(
            jnp.concatenate([x, x]),
            jnp.concatenate([sigma, sigma]),
            jnp.concatenate([labels, null]),
        )
        d_cond, d_uncond = jnp.split(both, 2)
        return d_uncond + guidance * (d_cond - d_uncond)

    return guided


# ----------------------------------------------------------------------------
# One solver step, and the plan of steps that every Heun-type sampler runs.


def _sigma_batch(x: Array, t) -> Array:
    return jnp.full((x.shape[0],), t, x.dtype)


def _gated_gamma(t, gamma: float, S_min: float, S_max: float):
    """Churn γ where S_min ≤ t ≤ S_max, else 0."""
    return jnp.where((t >= S_min) & (t <= S_max), gamma, 0.0)


def _step(
    denoise_fn: DenoiseFn,
    x: Array,
    t_cur,
    t_next,
    *,
    second_order: bool,
    gamma=None,
    S_noise: float = 1.0,
    key: Array | None = None,
) -> Array:
    """EDM Algorithm 2 step: churn to t̂ = t(1+γ), Euler step, optional Heun correction.

    gamma: the (already gated) churn γ, or None (static) for no churn and no noise draw.
    """
    if gamma is None:
        t_hat, x_hat = t_cur, x
    else:
        t_hat = t_cur * (1.0 + gamma)
        eps = jax.random.normal(key, x.shape, x.dtype)
        # sqrt(t̂² - t²) written so that it cannot go negative: XLA may fuse t̂² - t² into
        # an FMA whose rounding gives a tiny negative number (and a NaN) when γ = 0.
        x_hat = x + t_cur * jnp.sqrt(gamma * (2.0 + gamma)) * S_noise * eps
    d_cur = (x_hat - denoise_fn(x_hat, _sigma_batch(x, t_hat))) / t_hat
    x_next = x_hat + (t_next - t_hat) * d_cur
    if second_order:
        d_prime = (x_next - denoise_fn(x_next, _sigma_batch(x, t_next))) / t_next
        x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next


class _Plan(NamedTuple):
    """Per-step arrays for the Heun steps of one sampling run (leading axis: step)."""

    t_cur: Array
    t_next: Array
    gamma: Array  # gated churn γ (zeros when the run has no churn)
    key_id: Array  # step p draws from fold_in(key, key_id[p])
    jump: Array  # bool: a restart jump precedes this step
    jump_from: Array
    jump_to: Array


def _main_plan(sigmas: Array, churn: dict | None) -> _Plan:
    """The N-1 Heun steps of the main pass (the final Euler step runs after the loop)."""
    n = sigmas.shape[0] - 2
    t_cur, t_next = sigmas[:n], sigmas[1 : n + 1]
    gamma = jnp.zeros_like(t_cur) if churn is None else _gated_gamma(t_cur, **churn)
    zeros = jnp.zeros_like(t_cur)
    return _Plan(
        t_cur, t_next, gamma, jnp.arange(n, dtype=jnp.int32), jnp.zeros((n,), bool), zeros, zeros
    )


def _run_plan(
    denoise_fn: DenoiseFn,
    x: Array,
    sigmas: Array,
    plan: _Plan,
    *,
    churn: dict | None,
    S_noise: float,
    key: Array | None,
    jump_fn: Callable | None = None,
) -> Array:
    """One lax.scan over the plan's Heun steps, then the last main step as Euler (to σ = 0).

    Main step i always uses key_id i, so the same schedule draws the same noise
    whether or not restart steps are interleaved.
    """
    with_churn = churn is not None
    key_jump = None if jump_fn is None else jax.random.fold_in(key, 2**31 - 1)

    def body(x, p):
        if jump_fn is not None:
            x = jax.lax.cond(
                p.jump,
                lambda x: jump_fn(
                    jax.random.fold_in(key_jump, p.key_id), x, p.jump_from, p.jump_to
                ),
                lambda x: x,
                x,
            )
        x = _step(
            denoise_fn,
            x,
            p.t_cur,
            p.t_next,
            second_order=True,
            gamma=p.gamma if with_churn else None,
            S_noise=S_noise,
            key=jax.random.fold_in(key, p.key_id) if with_churn else None,
        )
        return x, None

    x, _ = jax.lax.scan(body, x, plan)
    last = sigmas.shape[0] - 2
    gamma = _gated_gamma(sigmas[last], **churn) if with_churn else None
    return _step(
        denoise_fn,
        x,
        sigmas[last],
        sigmas[last + 1],
        second_order=False,
        gamma=gamma,
        S_noise=S_noise,
        key=jax.random.fold_in(key, last) if with_churn else None,
    )


def _check_inputs(latents, sigmas):
    sigmas = jnp.asarray(sigmas)
    if sigmas.ndim != 1 or sigmas.shape[0] < 2:
        raise ValueError(
            f"sigmas must be a 1-D schedule of at least 2 levels, got shape {sigmas.shape}."
        )
    if latents.ndim < 1:
        raise ValueError("latents must have a leading batch axis.")
    return sigmas.astype(latents.dtype)


def _require_key(key, what):
    if key is None:
        raise ValueError(f"{what} draws noise: pass key=jax.random.PRNGKey(...).")
    return key


# ----------------------------------------------------------------------------
# Samplers.


def euler(
    denoise_fn: DenoiseFn,
    latents: Array,
    sigmas: Array,
    *,
    key: Array | None = None,
    particle_guidance: float = 0.0,
):
    """First-order Euler on the σ-ODE: N denoiser calls."""
    del key  # Deterministic.
    sigmas = _check_inputs(latents, sigmas)
    denoise_fn = _with_particle_guidance(denoise_fn, particle_guidance)
    num_steps = sigmas.shape[0] - 1

    def body(x, t):
        return _step(denoise_fn, x, t[0], t[1], second_order=False), None

    samples, _ = jax.lax.scan(body, latents, jnp.stack([sigmas[:-1], sigmas[1:]], axis=1))
    return samples, {"nfe": num_steps}


def heun(
    denoise_fn: DenoiseFn,
    latents: Array,
    sigmas: Array,
    *,
    key: Array | None = None,
    particle_guidance: float = 0.0,
):
    """EDM deterministic sampler (Heun, last step Euler): 2N - 1 denoiser calls."""
    del key  # Deterministic.
    sigmas = _check_inputs(latents, sigmas)
    denoise_fn = _with_particle_guidance(denoise_fn, particle_guidance)
    samples = _run_plan(
        denoise_fn, latents, sigmas, _main_plan(sigmas, None), churn=None, S_noise=1.0, key=None
    )
    return samples, {"nfe": 2 * (sigmas.shape[0] - 1) - 1}


def _churn_options(num_steps, S_churn, S_min, S_max, S_noise) -> dict | None:
    if S_churn < 0 or S_noise < 0:
        raise ValueError(f"S_churn and S_noise must be >= 0, got {S_churn} and {S_noise}.")
    if S_min > S_max:
        raise ValueError(f"S_min must be <= S_max, got {S_min} > {S_max}.")
    if S_churn == 0:
        return None
    return dict(gamma=min(S_churn / num_steps, math.sqrt(2.0) - 1.0), S_min=S_min, S_max=S_max)


def stochastic(
    denoise_fn: DenoiseFn,
    latents: Array,
    sigmas: Array,
    *,
    key: Array | None = None,
    S_churn: float = 0.0,
    S_min: float = 0.0,
    S_max: float = math.inf,
    S_noise: float = 1.0,
    particle_guidance: float = 0.0,
):
    """EDM stochastic sampler (Algorithm 2): churn γ = min(S_churn/N, √2-1) on S_min ≤ t ≤ S_max.

    Each step first raises the noise to t̂ = t(1+γ) with fresh noise scaled by
    S_noise, then takes a Heun step from t̂; 2N - 1 denoiser calls. S_churn=0
    is the deterministic Heun sampler.
    """
    sigmas = _check_inputs(latents, sigmas)
    churn = _churn_options(sigmas.shape[0] - 1, S_churn, S_min, S_max, S_noise)
    if churn is not None:
        key = _require_key(key, "stochastic sampling with S_churn > 0")
    denoise_fn = _with_particle_guidance(denoise_fn, particle_guidance)
    samples = _run_plan(
        denoise_fn,
        latents,
        sigmas,
        _main_plan(sigmas, churn),
        churn=churn,
        S_noise=S_noise,
        key=key,
    )
    return samples, {"nfe": 2 * (sigmas.shape[0] - 1) - 1}


def _validate_intervals(restart_intervals) -> list:
    intervals = []
    for n, interval in enumerate(restart_intervals):
        try:
            N_R, K, t_min, t_max = interval
        except (TypeError, ValueError):
            raise ValueError(
                f"restart_intervals[{n}] = {interval!r}: expected a tuple (N_R, K, t_min, t_max)."
            ) from None
        if int(N_R) != N_R or N_R < 2:
            raise ValueError(
                f"restart_intervals[{n}]: N_R (levels per restart) must be an int >= 2, got {N_R}."
            )
        if int(K) != K or K < 0:
            raise ValueError(
                f"restart_intervals[{n}]: K (restart repeats) must be an int >= 0, got {K}."
            )
        if not 0 < t_min < t_max:
            raise ValueError(
                f"restart_intervals[{n}]: need 0 < t_min < t_max, got t_min={t_min}, t_max={t_max}."
            )
        intervals.append((int(N_R), int(K), float(t_min), float(t_max)))
    return intervals


def _snap_index(sigmas: Array, t_min: float, t_max: float, n: int):
    """Index of the main level nearest to t_min, kept inside 1..N-1.

    The restart runs after the main step that lands on that level. With a
    concrete schedule we check the snapped level; with a traced one we can only
    clip.
    """
    num_steps = sigmas.shape[0] - 1
    try:
        sig = np.asarray(sigmas)
    except jax.errors.TracerArrayConversionError:
        return jnp.clip(jnp.argmin(jnp.abs(sigmas - t_min)), 1, num_steps - 1)
    idx = int(np.argmin(np.abs(sig - t_min)))
    if not 1 <= idx <= num_steps - 1:
        raise ValueError(
            f"restart_intervals[{n}]: t_min={t_min} snaps to sigmas[{idx}]={sig[idx]:.4g}; it must "
            f"snap to an inner level sigmas[1..{num_steps - 1}] (not the first or the final 0)."
        )
    if not sig[idx] < t_max:
        raise ValueError(
            f"restart_intervals[{n}]: t_min={t_min} snaps to sigmas[{idx}]={sig[idx]:.4g}, "
            f"which is not below t_max={t_max}."
        )
    return idx


def _restart_plan(
    sigmas: Array, intervals: list, churn: dict | None, inner_churn: dict | None, rho: float
) -> _Plan:
    """Main steps with the restart steps of each interval spliced in after their t_min step.

    Snapping t_min is monotone, so sorting intervals by decreasing t_min fixes
    their order statically; only positions depend on the (maybe traced) snapped
    indices, and the plan is assembled by one scatter per field.
    """
    num_steps = sigmas.shape[0] - 1
    main = _main_plan(sigmas, churn)
    blocks = sorted(
        ((iv, _snap_index(sigmas, iv[2], iv[3], n)) for n, iv in enumerate(intervals) if iv[1] > 0),
        key=lambda b: -b[0][2],
    )
    if not blocks:
        return main
    lengths = [K * (N_R - 1) for (N_R, K, _, _), _ in blocks]
    # Main step i moves back by every block that runs before it (those with idx <= i).
    idx = jnp.asarray([b[1] for b in blocks], jnp.int32)
    main_pos = jnp.arange(num_steps - 1, dtype=jnp.int32)
    main_pos = main_pos + jnp.sum(
        jnp.where(idx[:, None] <= main_pos[None, :], jnp.asarray(lengths)[:, None], 0), axis=0
    )
    positions, pieces = [main_pos], [main]
    offset = 0
    for ((N_R, K, _, t_max), _), length, start in zip(blocks, lengths, idx):
        levels = _karras_steps(jnp.asarray(t_max, sigmas.dtype), sigmas[start], N_R, rho)
        j = jnp.tile(jnp.arange(N_R - 1), K)
        t_cur = levels[j]
        gamma = jnp.zeros_like(t_cur) if inner_churn is None else _gated_gamma(t_cur, **inner_churn)
        pieces.append(
            _Plan(
                t_cur=t_cur,
                t_next=levels[j + 1],
                gamma=gamma,
                key_id=num_steps + offset + jnp.arange(length, dtype=jnp.int32),
                jump=(j == 0),
                jump_from=jnp.full((length,), levels[-1]),
                jump_to=jnp.full((length,), levels[0]),
            )
        )
        positions.append(start + offset + jnp.arange(length, dtype=jnp.int32))
        offset += length
    pos = jnp.concatenate(positions)
    total = num_steps - 1 + offset
    return _Plan(
        *(
            jnp.zeros((total,), field[0].dtype)
            .at[pos]
            .set(jnp.concatenate(field), unique_indices=True)
            for field in zip(*pieces)
        )
    )


def restart(
    denoise_fn: DenoiseFn,
    latents: Array,
    sigmas: Array,
    *,
    key: Array | None = None,
    restart_intervals: Sequence[RestartInterval] = (),
    S_noise: float = 1.0,
    S_churn: float = 0.0,
    S_min: float = 0.0,
    S_max: float = math.inf,
    restart_gamma: float = 0.0,
    rho: float = 7.0,
    D: int | None = None,
    particle_guidance: float = 0.0,
):
    """Restart sampling (Xu et al. 2023): Heun main pass plus forward-noise/backward-ODE cycles.

    Args:
      restart_intervals: [(N_R, K, t_min, t_max), ...]. t_min snaps to the
        nearest level of `sigmas`; when the main pass reaches it, K times: jump
        forward to t_max (x += S_noise·sqrt(t_max² - t_min²)·ε), then Heun back to
        t_min over N_R EDM-spaced levels (ρ = rho), 2(N_R - 1) calls each.
        Intervals that snap to the same level run one after the other.
      S_noise: scale of the restart jump (and of any churn noise).
      S_churn, S_min, S_max: EDM churn in the main pass, as in `stochastic`.
      restart_gamma: churn γ inside the restart loops on S_min ≤ t ≤ S_max (the
        official code uses 0.05 with S_min=0.01, S_max=1).
      D: PFGM++ augmentation dimension: the forward jump moves on the
        (N+D)-dimensional picture (pfgmpp.restart_jump). None: Gaussian jump.

    All steps, main and restart, run in one lax.scan over a precomputed plan.
    NFE = 2N - 1 + Σ_i K_i·2(N_R,i - 1). With every K = 0 this is `stochastic`
    (or `heun` without churn), bit for bit.
    """
    sigmas = _check_inputs(latents, sigmas)
    num_steps = sigmas.shape[0] - 1
    intervals = _validate_intervals(restart_intervals)
    churn = _churn_options(num_steps, S_churn, S_min, S_max, S_noise)
    if restart_gamma < 0:
        raise ValueError(f"restart_gamma must be >= 0, got {restart_gamma}.")
    if D is not None and (int(D) != D or D < 1):
        raise ValueError(f"D must be a positive integer or None, got {D}.")
    has_restarts = any(K > 0 for _, K, _, _ in intervals)
    if has_restarts and num_steps < 2:
        raise ValueError("Restart needs a main schedule of at least 2 steps.")
    inner_churn = (
        dict(gamma=restart_gamma, S_min=S_min, S_max=S_max)
        if restart_gamma > 0 and has_restarts
        else None
    )
    if churn is None and inner_churn is not None:
        churn = dict(gamma=0.0, S_min=S_min, S_max=S_max)  # noise in restart steps only
    if churn is not None or has_restarts:
        key = _require_key(key, "restart sampling")
    plan = _restart_plan(sigmas, intervals, churn, inner_churn, rho)

    jump_fn = None
    if has_restarts:

        def jump_fn(k, x, t_from, t_to):
            if D is not None:
                return pfgmpp.restart_jump(k, x, t_from, t_to, D, S_noise)
            eps = jax.random.normal(k, x.shape, x.dtype)
            return x + S_noise * jnp.sqrt((t_to - t_from) * (t_to + t_from)) * eps

    denoise_fn = _with_particle_guidance(denoise_fn, particle_guidance)
    samples = _run_plan(
        denoise_fn, latents, sigmas, plan, churn=churn, S_noise=S_noise, key=key, jump_fn=jump_fn
    )
    nfe = 2 * num_steps - 1 + sum(K * 2 * (N_R - 1) for N_R, K, _, _ in intervals)
    return samples, {"nfe": nfe}


SAMPLERS = {"euler": euler, "heun": heun, "stochastic": stochastic, "restart": restart}


def get_sampler(name: str) -> Callable:
    """Sampler function by name: "euler", "heun", "stochastic" or "restart"."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"Unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}.") from None
