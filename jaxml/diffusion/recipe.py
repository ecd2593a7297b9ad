"""The pieces a diffusion run assembles from a config: network, state, loss, sampler, samples.

Shared by `jaxml.tasks.diffusion` (train + eval samples), `python -m train.sample`
(sampling a checkpoint) and the benchmarks, so all build the same model from the
same config, and initialise it in one place (`create_state`).
"""

import dataclasses
import functools
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from jaxml.diffusion import augment, pfgmpp, samplers
from jaxml.diffusion.losses import make_denoising_loss
from jaxml.diffusion.preconditioning import get_preconditioner, precondition
from jaxml.models.mlp_denoiser import ImageMLPDenoiser
from jaxml.models.unet import UNet

log = logging.getLogger(__name__)

# config.model.name -> network class; the other fields of config.model are its attributes.
NETWORKS = {"unet": UNet, "mlp": ImageMLPDenoiser}
NULL_LABEL = -1  # the networks read an out-of-range label as the null (unconditional) class


def network_fields(model_config) -> dict:
    """config.model as the network's keyword arguments (without name / preset)."""
    kwargs = dict(model_config)
    kwargs.pop("name", None)
    kwargs.pop("preset", None)
    if isinstance(kwargs.get("dtype"), str):  # mixed precision: bf16 compute, fp32 params
        kwargs["dtype"] = jnp.dtype(kwargs["dtype"])
    for key in ("channel_mult", "attn_resolutions"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    return kwargs


def build_network(model_config) -> nn.Module:
    cls = NETWORKS[model_config.get("name", "unet")]
    kwargs = network_fields(model_config)
    if cls is ImageMLPDenoiser:
        kwargs.pop("dtype", None)  # the MLP computes in float32
    return cls(**kwargs)


def image_shape(config) -> tuple[int, int, int]:
    return (config.data.image_size, config.data.image_size, config.data.channels)


def _D(config):
    return None if config.diffusion.D is None else int(config.diffusion.D)


def conditional(config) -> bool:
    return config.model.num_classes > 0


LR_DECAYS = ("constant", "cosine", "rsqrt")


def learning_rate_schedule(config) -> optax.Schedule:
    """Linear warm-up to optimizer.lr (EDM), then optimizer.decay:
    constant (EDM); cosine to 0 at total_steps; rsqrt (EDM2): lr / sqrt(max(t / t_ref, 1))
    with t_ref = optimizer.decay_ref_steps."""
    o = config.optimizer
    warmup = max(o.warmup_steps, 1)
    decay = o.get("decay", "constant")
    ramp = optax.linear_schedule(0.0, o.lr, warmup)
    if decay == "constant":
        return ramp
    if decay == "cosine":
        after = optax.cosine_decay_schedule(o.lr, max(config.total_steps - warmup, 1))
    elif decay == "rsqrt":
        ref = o.decay_ref_steps
        after = lambda t: o.lr / jnp.sqrt(jnp.maximum((t + warmup) / ref, 1.0))  # noqa: E731
    else:
        raise ValueError(f"optimizer.decay must be one of {LR_DECAYS}, got {decay!r}")
    return optax.join_schedules([ramp, after], [warmup])


def make_optimizer(config) -> optax.GradientTransformation:
    """Adam with the schedule above, optional global-norm clipping."""
    o = config.optimizer
    chain = [optax.clip_by_global_norm(o.grad_clip)] if o.grad_clip else []
    schedule = learning_rate_schedule(config)
    return optax.chain(*chain, optax.adam(schedule, b1=o.b1, b2=o.b2, eps=1e-8))


def init_variables(network: nn.Module, config, rng) -> dict:
    """The network's variables, initialised on a batch of 2 (with labels if conditional)."""
    example = jnp.zeros((2, *image_shape(config)), jnp.float32)
    labels = jnp.zeros((2,), jnp.int32) if conditional(config) else None
    return network.init(rng, example, jnp.zeros((2,)), labels)


def create_state(config, mesh, *, network: nn.Module | None = None, abstract_only: bool = False):
    """(network, tx, state, state_shardings): the train state (with EMA) laid out on `mesh`.

    The one place a diffusion model is initialised: training, train.sample (abstract_only,
    as a restore target) and the benchmarks all call it.
    """
    from jaxml import training  # the spine imports nothing from here; keep it one-way at import
    from jaxml.training.posthoc_ema import tracked_sigma_rels

    network = network or build_network(config.model)
    tx = make_optimizer(config)
    state, shardings = training.create_train_state(
        lambda rng: init_variables(network, config, rng),
        tx,
        jax.random.PRNGKey(config.seed),
        mesh,
        use_ema=True,
        posthoc_sigma_rels=tracked_sigma_rels(config),  # a restore target must match the save
        fsdp_min_size=config.fsdp_min_size,
        abstract_only=abstract_only,
    )
    return network, tx, state, shardings


def load_ema_params(checkpointer, step: int, config, mesh):
    """(network, EMA params) of checkpoint `step`, restored onto `mesh`."""
    network, _, abstract, _ = create_state(config, mesh, abstract_only=True)
    return network, checkpointer.restore_state(step, abstract).ema_params


def augment_settings(config) -> dict | None:
    """The `config.augment` options when augmentation is on (p > 0), else None."""
    options = config.get("augment")
    if options is None or not options.get("p", 0):
        return None
    return dict(options)


def make_train_loss(network: nn.Module, config) -> Callable:
    """loss_fn(params, model_state, batch, rng) -> (loss, (model_state, metrics)) for the spine.

    A conditional model gets the batch's labels; the network drops them to the null class
    with probability config.model.label_dropout (classifier-free guidance training).
    """
    labels_used = conditional(config)
    augment_options = augment_settings(config)

    def loss_fn(params, model_state, batch, rng):
        dropout_rng, noise_rng = jax.random.split(rng)
        extra = {}
        if augment_options is not None:  # EDM's non-leaky augmentation: the net sees its labels
            # A key of its own, so runs without augmentation keep their random streams.
            images, extra["augment_labels"] = augment.augment(
                jax.random.fold_in(rng, 7), batch["image"], **augment_options
            )
            batch = {**batch, "image": images}

        def net_apply(p, x, c_noise, labels):
            return network.apply(
                {"params": p},
                x,
                c_noise,
                labels if labels_used else None,
                train=True,
                rngs={"dropout": dropout_rng},
                **extra,
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


def sampler_sigmas(config) -> jax.Array:
    s = config.sampler
    return samplers.edm_sigmas(s.num_steps, s.sigma_min, s.sigma_max, s.rho)


def check_sampler(config) -> int:
    """Traces the config's sampler (no compute) so bad settings raise now; returns its NFE."""
    sample = samplers.get_sampler(config.sampler.name)
    options, sigmas = sampler_options(config), sampler_sigmas(config)
    batch = 3 if config.sampler.particle_guidance else 1
    nfe = []

    def run(latents):
        images, info = sample(lambda x, s: x, latents, sigmas, key=jax.random.PRNGKey(0), **options)
        nfe.append(info["nfe"])
        return images

    jax.eval_shape(run, jax.ShapeDtypeStruct((batch, *image_shape(config)), jnp.float32))
    return nfe[0]


@dataclasses.dataclass(frozen=True, eq=False)
class SampleFn:
    """`fn(params, key, indices, labels) -> images`, plus its NFE per image.

    Image i depends only on (key, indices[i], labels[i]) — its latents and sampler noise
    come from fold_in(key, indices[i]) — so results do not depend on how a run is
    chunked or sharded. Particle guidance couples the images of a batch, so with it on
    the noise is drawn per batch and results depend on the chunking.
    """

    fn: Callable
    nfe: int
    per_sample: bool

    def __call__(self, params, key, indices, labels):
        return self.fn(params, key, indices, labels)


def make_sample_fn(
    network: nn.Module, config, *, sampler: str | None = None, per_sample: bool | None = None
) -> SampleFn:
    """Latents from the prior, then the config's sampler (or `sampler`, by name, with the
    config's settings for it). A conditional model is guided with w = config.sampler.guidance:
    D = D_uncond + w·(D_cond − D_uncond) (w = 1: plain conditional).

    per_sample: noise keyed per image (default; see SampleFn) or per batch (False; always
    so with particle guidance)."""
    if sampler is not None and sampler != config.sampler.name:
        config = config.copy_and_resolve_references()
        with config.unlocked():
            config.sampler.name = sampler
    sample = samplers.get_sampler(config.sampler.name)
    options, sigmas = sampler_options(config), sampler_sigmas(config)
    precond = get_preconditioner(config.diffusion.precond)
    labels_used = conditional(config)
    guidance = float(config.sampler.get("guidance", 1.0))
    per_sample = (per_sample is not False) and not config.sampler.particle_guidance

    def denoiser(params, labels):
        def denoise_with_labels(x, sigma, lab):
            def net_fn(x_in, c_noise, lab_):
                return network.apply({"params": params}, x_in, c_noise, lab_)

            return precondition(precond, net_fn, x, sigma, lab)

        if not labels_used:
            return lambda x, sigma: denoise_with_labels(x, sigma, None)
        return samplers.classifier_free_guidance(
            denoise_with_labels, labels, guidance, null_label=NULL_LABEL
        )

    def run(params, keys, labels):
        """keys: one per image in per-sample mode (vmapped), else one for the batch."""
        latent_key, sample_key = jax.random.split(keys)
        latents = prior_latents(latent_key, config, labels.shape[0])
        images, _ = sample(denoiser(params, labels), latents, sigmas, key=sample_key, **options)
        return images

    def fn(params, key, indices, labels):
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)
        if per_sample:
            one = lambda k, lab: run(params, k, lab[None])[0]  # noqa: E731
            return jax.vmap(one)(keys, labels)
        return run(params, jax.random.fold_in(keys[0], 2**31 - 1), labels)

    return SampleFn(fn, check_sampler(config), per_sample)


def prior_latents(key, config, num: int) -> jax.Array:
    return pfgmpp.prior(key, (num, *image_shape(config)), config.sampler.sigma_max, _D(config))


def default_labels(config, num: int, start: int = 0) -> np.ndarray:
    """Labels of images start..start+num: cycling 0..K-1 for a conditional model, else 0."""
    if not conditional(config):
        return np.zeros((num,), np.int32)
    return (np.arange(start, start + num) % config.model.num_classes).astype(np.int32)


def micro_batch_size(config, num: int, batch_size: int | None = None) -> int:
    """The compiled batch: config.eval.batch_size (or `batch_size`), no more than `num` needs
    (rounded up to the device count)."""
    batch_size = batch_size or config.eval.get("batch_size", 256)
    devices = jax.device_count()
    return min(int(batch_size), -(-num // devices) * devices)


@functools.lru_cache(maxsize=8)
def _compiled(sample_fn: SampleFn, batch_sharding, replicated):
    return jax.jit(
        sample_fn.fn,
        in_shardings=(replicated, replicated, batch_sharding, batch_sharding),
        out_shardings=batch_sharding,
    )


def sample_chunks(
    sample_fn: SampleFn,
    params,
    key,
    config,
    num: int,
    *,
    batch_sharding,
    replicated,
    labels: np.ndarray | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yields (start, images in [-1, 1], labels) for images start..start+len, on every process.

    Fixed-size micro-batches run through one compiled program (the last one padded and
    trimmed); each chunk is gathered from all processes before the next is drawn, so
    memory does not grow with `num`.
    """
    if labels is None:
        labels = default_labels(config, num)
    labels = np.asarray(labels, np.int32)
    if labels.shape != (num,):
        raise ValueError(f"labels must have shape ({num},), got {labels.shape}")
    size = micro_batch_size(config, num, batch_size)
    if size % jax.device_count():
        raise ValueError(
            f"the sampling batch {size} must be a multiple of the device count "
            f"({jax.device_count()})"
        )
    run = _compiled(sample_fn, batch_sharding, replicated)
    main, chunks = jax.process_index() == 0, -(-num // size)
    bar = progress and main and sys.stderr.isatty() and chunks > 1
    log_every = max(1, chunks // 10) if progress and main and not bar and chunks > 1 else 0
    began = time.perf_counter()
    for chunk, start in enumerate(
        tqdm(range(0, num, size), desc="sampling", unit="batch", disable=not bar)
    ):
        if log_every and chunk and chunk % log_every == 0:  # log files: a line with rate and ETA
            rate = start / (time.perf_counter() - began)
            log.info(
                "sampled %d/%d images, %.1f images/s, ETA %.0f s",
                start,
                num,
                rate,
                (num - start) / rate,
            )
        valid = min(size, num - start)
        indices = np.arange(start, start + size, dtype=np.int32)
        chunk_labels = np.zeros((size,), np.int32)
        chunk_labels[:valid] = labels[start : start + valid]
        images = run(
            params,
            key,
            _global(indices, batch_sharding),
            _global(chunk_labels, batch_sharding),
        )
        images = jnp.clip(images, -1, 1)
        if jax.process_count() > 1:  # every process gets all images (rows of other hosts too)
            images = multihost_utils.process_allgather(images, tiled=True)
        yield start, np.asarray(jax.device_get(images))[:valid], labels[start : start + valid]


def _global(values: np.ndarray, sharding) -> jax.Array:
    """The same full array on every process -> a global array sharded by `sharding`."""
    return jax.make_array_from_callback(values.shape, sharding, lambda index: values[index])


def sample_images(
    sample_fn: SampleFn,
    params,
    key,
    config,
    num: int,
    *,
    batch_sharding,
    replicated,
    labels: np.ndarray | None = None,
    batch_size: int | None = None,
    out_dir: str | Path | None = None,
    keep: bool = True,
    progress: bool = True,
) -> tuple[np.ndarray | None, int]:
    """`num` images in [-1, 1] (see `sample_chunks`); returns (images, NFE per image).

    out_dir: also write each chunk as it comes to out_dir/samples_<start>.npz (images,
    labels, indices; process 0). keep=False returns None instead of the images, so
    memory stays flat in `num`.
    """
    kept = []
    for start, images, chunk_labels in sample_chunks(
        sample_fn,
        params,
        key,
        config,
        num,
        batch_sharding=batch_sharding,
        replicated=replicated,
        labels=labels,
        batch_size=batch_size,
        progress=progress,
    ):
        if out_dir is not None and jax.process_index() == 0:
            write_shard(out_dir, start, images, chunk_labels)
        if keep:
            kept.append(images)
    return (np.concatenate(kept) if keep else None), sample_fn.nfe


def evaluate_digits_per_seed(
    sample_fn: SampleFn, params, config, seeds, num_samples: int, mesh, *, on_images=None
) -> list[dict]:
    """`metrics.evaluate_digits` of `num_samples` images for each latent seed (the same
    latents for every sampler and params: paired comparisons); on_images(seed, images) sees
    each set before it is scored."""
    from jaxml import parallel
    from jaxml.diffusion import metrics  # heavy (Inception); only the evaluations need it

    evaluations = []
    for seed in seeds:
        images, _ = sample_images(
            sample_fn,
            params,
            jax.random.PRNGKey(seed),
            config,
            num_samples,
            batch_sharding=parallel.batch_sharding(mesh),
            replicated=parallel.replicated(mesh),
        )
        if on_images is not None:
            on_images(seed, images)
        evaluations.append(metrics.evaluate_digits(images, data_dir=config.data.data_dir))
    return evaluations


def write_shard(out_dir, start: int, images: np.ndarray, labels: np.ndarray) -> None:
    out_dir = epath.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    indices = np.arange(start, start + images.shape[0])
    with (out_dir / f"samples_{start:08d}.npz").open("wb") as f:
        np.savez(f, images=images, labels=labels, indices=indices)


def read_shards(out_dir: str | Path) -> dict[str, np.ndarray]:
    """The shards `sample_images(out_dir=...)` wrote, concatenated in index order."""
    files = sorted(Path(out_dir).glob("samples_*.npz"))
    if not files:
        raise FileNotFoundError(f"no samples_*.npz in {out_dir}")
    parts = [dict(np.load(f)) for f in files]
    return {k: np.concatenate([p[k] for p in parts]) for k in ("images", "labels", "indices")}
