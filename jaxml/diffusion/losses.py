"""Denoising score-matching loss for the training spine (EDM, VP, VE; PFGM++ noise).

    loss = E_{σ, y, n} λ(σ) ‖D(y + n; σ) - y‖²,

σ and λ from the preconditioner, n Gaussian (D=None) or PFGM++ (finite D).
The squared error is averaged over elements (EDM sums them; the mean only
rescales the loss and keeps its size independent of the image size).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxml.diffusion import pfgmpp
from jaxml.diffusion.preconditioning import NetFn, Preconditioner, get_preconditioner, precondition

Array = jax.Array


def weighted_denoising_error(
    precond: Preconditioner,
    net_fn: NetFn,
    y: Array,
    noise: Array,
    sigma: Array,
    labels: Array | None = None,
    target: Array | None = None,
) -> tuple[Array, Array]:
    """Per-example λ(σ)·mean((D(y+n; σ) - target)²) and the unweighted mean, both (batch,).

    target defaults to y (Stable Target Field passes its posterior mean instead).
    """
    target = y if target is None else target
    denoised = precondition(precond, net_fn, y + noise, sigma, labels)
    sq_err = jnp.mean(jnp.square(denoised - target).reshape(y.shape[0], -1), axis=1)
    return precond.loss_weight(sigma) * sq_err, sq_err


def make_denoising_loss(
    net_apply: Callable[..., Array],
    precond: str | Preconditioner = "edm",
    D: float | None = None,
    *,
    stf: bool = False,
    **precond_kwargs: Any,
) -> Callable[[Any, dict[str, Array], Array], tuple[Array, dict[str, Array]]]:
    """Returns a pure, jit-able loss(params, batch, key) -> (scalar, metrics).

    Args:
      net_apply: net_apply(params, x_in, c_noise, labels) -> F, the raw network.
      precond: "edm", "vp", "ve" or a preconditioner instance; sets c_*, the σ
        distribution and λ(σ).
      D: PFGM++ augmentation dimension; None trains EDM (Gaussian noise).
      stf: Stable Target Field: regress on the posterior mean over the batch's
        clean images instead of each example's own image.
      **precond_kwargs: options of the named preconditioner (e.g. sigma_data).

    batch: {"image": (B, ...), optional "label": (B, ...)}. Every random draw
    is per example, so the loss is the same whatever the batch sharding.
    """
    precond = get_preconditioner(precond, **precond_kwargs)
    if D is not None and not D > 0:
        raise ValueError(f"PFGM++ augmentation dimension D must be positive or None, got {D}.")

    def loss_fn(params, batch, key):
        if "image" not in batch:
            raise ValueError(f"The batch needs an 'image' entry; got keys {sorted(batch)}.")
        y = batch["image"]
        labels = batch.get("label")
        k_sigma, k_noise = jax.random.split(key)
        sigma = precond.sample_sigma(k_sigma, (y.shape[0],))  # float32 even for bf16 images
        noise = pfgmpp.sample_noise(k_noise, y.shape, sigma, D, y.dtype)
        target = pfgmpp.stf_target(y + noise, sigma, y, D) if stf else None

        def net_fn(x_in, c_noise, labels_):
            return net_apply(params, x_in, c_noise, labels_)

        weighted, sq_err = weighted_denoising_error(
            precond, net_fn, y, noise, sigma, labels, target
        )
        loss = jnp.mean(weighted)
        return loss, {"loss": loss, "mse": jnp.mean(sq_err)}

    return loss_fn
