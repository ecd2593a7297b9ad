"""The pieces a diffusion entrypoint assembles from a config: network, loss, sampler.

Shared by `python -m train.diffusion` (train + eval samples) and
`python -m train.sample` (sampling a checkpoint), so both build the same
model from the same config.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from jaxml.diffusion import pfgmpp, samplers
from jaxml.diffusion.losses import make_denoising_loss
from jaxml.diffusion.preconditioning import make_denoiser
from jaxml.models.unet import UNet


def build_network(model_config) -> nn.Module:
    kwargs = dict(model_config)
    kwargs.pop("preset", None)
    if isinstance(kwargs.get("dtype"), str):  # mixed precision: bf16 compute, fp32 params
        kwargs["dtype"] = jnp.dtype(kwargs["dtype"])
    for key in ("channel_mult", "attn_resolutions"):
        kwargs[key] = tuple(kwargs[key])
    return UNet(**kwargs)


def image_shape(config) -> tuple[int, int, int]:
    return (config.data.image_size, config.data.image_size, config.data.channels)


def _D(config):
    return None if config.diffusion.D is None else int(config.diffusion.D)


def make_optimizer(config) -> optax.GradientTransformation:
    """Adam with linear warm-up (EDM), optional global-norm clipping."""
    o = config.optimizer
    schedule = optax.linear_schedule(0.0, o.lr, max(o.warmup_steps, 1))
    chain = [optax.clip_by_global_norm(o.grad_clip)] if o.grad_clip else []
    return optax.chain(*chain, optax.adam(schedule, b1=o.b1, b2=o.b2, eps=1e-8))


def make_train_loss(network: nn.Module, config) -> Callable:
    """loss_fn(params, model_state, batch, rng) -> (loss, (model_state, metrics)) for the spine."""
    labels_used = config.model.num_classes > 0

    def loss_fn(params, model_state, batch, rng):
        dropout_rng, noise_rng = jax.random.split(rng)

        def net_apply(p, x, c_noise, labels):
            return network.apply(
                {"params": p},
                x,
                c_noise,
                labels if labels_used else None,
                train=True,
                rngs={"dropout": dropout_rng},
            )

        loss = make_denoising_loss(
            net_apply, config.diffusion.precond, _D(config), stf=config.diffusion.stf
        )
        value, metrics = loss(params, batch, noise_rng)
        return value, (model_state, metrics)

    return loss_fn


def sampler_options(config) -> dict:
    s = config.sampler
    options: dict[str, Any] = {}
    if s.name in ("stochastic", "restart"):
        options.update(S_churn=s.S_churn, S_min=s.S_min, S_max=s.S_max, S_noise=s.S_noise)
    if s.name == "restart":
        options.update(
            restart_intervals=[tuple(i) for i in s.restart_intervals],
            restart_gamma=s.restart_gamma,
            D=_D(config),
        )
    if s.particle_guidance:
        options["particle_guidance"] = s.particle_guidance
    return options


def make_sample_fn(network: nn.Module, config, *, sampler: str | None = None) -> Callable:
    """sample_fn(params, key, labels) -> (images, nfe): latents from the prior, one per label,
    then the config's sampler (or `sampler`, by name, with the config's settings for it)."""
    if sampler is not None and sampler != config.sampler.name:
        config = config.copy_and_resolve_references()
        with config.unlocked():
            config.sampler.name = sampler
    sample = samplers.get_sampler(config.sampler.name)
    options = sampler_options(config)
    sigmas = samplers.edm_sigmas(
        config.sampler.num_steps,
        config.sampler.sigma_min,
        config.sampler.sigma_max,
        config.sampler.rho,
    )
    labels_used = config.model.num_classes > 0

    def sample_fn(params, key, labels):
        latent_key, sample_key = jax.random.split(key)
        latents = prior_latents(latent_key, config, labels.shape[0])

        def net_apply(p, x, c_noise, lab):
            return network.apply({"params": p}, x, c_noise, lab if labels_used else None)

        denoise = make_denoiser(
            net_apply, params, config.diffusion.precond, labels=labels if labels_used else None
        )
        images, info = sample(denoise, latents, sigmas, key=sample_key, **options)
        return images, jnp.asarray(info["nfe"], jnp.int32)

    return sample_fn


def prior_latents(key, config, num: int) -> jax.Array:
    return pfgmpp.prior(key, (num, *image_shape(config)), config.sampler.sigma_max, _D(config))


def sample_images(
    sample_fn: Callable,
    params,
    key,
    config,
    num: int,
    *,
    batch_sharding,
    replicated,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """`num` images in [-1, 1], the batch sharded over the mesh; returns (images, nfe).

    The prior draw and the sampler are one compiled program, so repeated calls (one per
    eval) reuse it instead of recompiling the PFGM++ prior's gamma sampler each time.
    """
    if labels is None:
        labels = np.zeros((num,), np.int32)
    labels = jax.device_put(jnp.asarray(labels, jnp.int32), batch_sharding)
    run = jax.jit(
        sample_fn,
        in_shardings=(replicated, replicated, batch_sharding),
        out_shardings=(batch_sharding, replicated),
    )
    images, nfe = run(params, key, labels)
    images = jnp.clip(images, -1, 1)
    if jax.process_count() > 1:  # every process gets all images (rows of other hosts too)
        images = multihost_utils.process_allgather(images, tiled=True)
    return np.asarray(jax.device_get(images)), int(nfe)


def load_ema_params(checkpointer, step: int, config, mesh):
    """EMA params of checkpoint `step`, restored onto `mesh` (model and optimizer from `config`)."""
    from jaxml import training  # the spine imports nothing from here; keep it one-way at import
    from jaxml.training.posthoc_ema import tracked_sigma_rels

    network = build_network(config.model)
    example = jnp.zeros((2, *image_shape(config)), jnp.float32)
    labels = jnp.zeros((2,), jnp.int32) if config.model.num_classes else None
    abstract, _ = training.create_train_state(
        lambda rng: network.init(rng, example, jnp.zeros((2,)), labels),
        make_optimizer(config),
        jax.random.PRNGKey(0),
        mesh,
        use_ema=True,
        posthoc_sigma_rels=tracked_sigma_rels(config),  # the saved state's shape must match
        fsdp_min_size=config.fsdp_min_size,
        abstract_only=True,
    )
    return network, checkpointer.restore_state(step, abstract).ema_params
