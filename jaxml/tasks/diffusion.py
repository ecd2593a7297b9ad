"""The diffusion / PFGM++ image task: config checks, train state, step and evaluators.

`python -m train.diffusion` is `build(config, mesh)` then `jaxml.tasks.train`. Every
config problem is found by `validate` before any data is read or compiled, as one
ConfigError naming the key.
"""

import dataclasses
import logging
import math
import os

import jax

from jaxml import data, parallel, training
from jaxml.data import preprocess as preprocessing
from jaxml.diffusion import recipe, samplers
from jaxml.diffusion.preconditioning import PRECONDITIONERS
from jaxml.tasks import Task, evaluators
from jaxml.training import cli
from jaxml.training.ema import make_edm_ema_decay

log = logging.getLogger(__name__)
ConfigError = cli.ConfigError


def _require(ok: bool, key: str, message: str, value) -> None:
    if not ok:
        raise ConfigError(f"config.{key} {message}, got {value!r}")


def _validate_augment(config) -> None:
    from jaxml.diffusion import augment

    unknown = sorted(set(config.augment) - set(augment.DEFAULTS))
    _require(
        not unknown, "augment", f"has unknown keys (known: {sorted(augment.DEFAULTS)})", unknown
    )
    for name in augment.LABELS:
        value = config.augment.get(name, 0)
        _require(value >= 0, f"augment.{name}", "must be >= 0", value)
    if config.augment.p > 0:
        dim = augment.augment_dim(**config.augment)
        have = config.model.get("augment_dim", 0)
        _require(
            have == dim,
            "model.augment_dim",
            f"must be {dim}, the label size of config.augment (EDM's augment_dim)",
            have,
        )


def _validate_model(config) -> None:
    m = config.model
    name = m.get("name", "unet")
    _require(
        name in recipe.NETWORKS, "model.name", f"must be one of {sorted(recipe.NETWORKS)}", name
    )
    cls = recipe.NETWORKS[name]
    dtype = m.get("dtype")
    if dtype is not None:
        try:
            jax.numpy.dtype(dtype)
        except TypeError:
            raise ConfigError(f"config.model.dtype {dtype!r} is not a dtype") from None
    known = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
    unknown = sorted(set(recipe.network_fields(m)) - known - {"dtype"})
    if unknown:
        raise ConfigError(f"config.model has field(s) {unknown} that model.name={name!r} lacks")
    _require(m.num_classes >= 0, "model.num_classes", "must be >= 0", m.num_classes)
    _require(0 <= m.label_dropout <= 1, "model.label_dropout", "must be in [0, 1]", m.label_dropout)
    if m.label_dropout > 0 and m.num_classes == 0:
        raise ConfigError("config.model.label_dropout > 0 needs config.model.num_classes > 0")
    try:  # the network's own checks (channels, attention, ...), traced only: no compute
        network = recipe.build_network(m)
        jax.eval_shape(lambda: recipe.init_variables(network, config, jax.random.PRNGKey(0)))
    except (ValueError, TypeError) as e:
        raise ConfigError(f"config.model ({name}): {e}") from None


def _validate_sampler(config) -> None:
    s = config.sampler
    _require(
        s.name in samplers.SAMPLERS,
        "sampler.name",
        f"must be one of {sorted(samplers.SAMPLERS)}",
        s.name,
    )
    _require(s.num_steps >= 1, "sampler.num_steps", "must be >= 1", s.num_steps)
    _require(
        0 < s.sigma_min <= s.sigma_max,
        "sampler.sigma_min",
        "must be in (0, sigma_max]",
        s.sigma_min,
    )
    guidance = s.get("guidance", 1.0)
    _require(
        math.isfinite(guidance) and guidance >= 0, "sampler.guidance", "must be >= 0", guidance
    )
    if guidance != 1.0 and config.model.num_classes == 0:
        raise ConfigError(
            f"config.sampler.guidance={guidance} needs a class-conditional model "
            "(config.model.num_classes > 0)"
        )
    try:
        recipe.check_sampler(config)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"config.sampler ({s.name}): {e}") from None


def _validate_eval(config) -> None:
    e = config.eval
    _require(e.num_samples > 0, "eval.num_samples", "must be positive", e.num_samples)
    devices = jax.device_count()
    batch = e.get("batch_size", 256)
    _require(
        batch > 0 and batch % devices == 0,
        "eval.batch_size",
        f"must be a positive multiple of the device count ({devices})",
        batch,
    )
    _require(e.grid_size >= 0, "eval.grid_size", "must be >= 0", e.grid_size)
    _require(e.grid_scale >= 1, "eval.grid_scale", "must be >= 1", e.grid_scale)
    names = tuple(config.get("evals", ()))
    evaluators.check_names(names)
    if "fd_digits" in names:
        _require(
            config.data.name == "digits",
            "data.name",
            "must be 'digits' for the fd_digits evaluator (config.evals)",
            config.data.name,
        )
        k = config.model.num_classes
        _require(
            not k or e.num_samples >= 2 * k,
            "eval.num_samples",
            f"must be >= 2 per class ({2 * k}) for the per-class FD of a conditional model",
            e.num_samples,
        )
    for key in ("fid_reference_stats", "inception_weights"):
        path = e.get(key)
        if "fid" in names and path and not os.path.exists(os.path.expanduser(path)):
            raise ConfigError(f"config.eval.{key}: no file {path!r}")


def validate_sampling(config) -> None:
    """The checks that sampling a trained model needs (train.sample): sampler and eval batch."""
    devices = jax.device_count()
    batch = config.eval.get("batch_size", 256)
    _require(
        batch > 0 and batch % devices == 0,
        "eval.batch_size",
        f"must be a positive multiple of the device count ({devices})",
        batch,
    )
    _validate_sampler(config)


def validate(config) -> None:
    """Every config check of the task, before any work: raises ConfigError naming the key."""
    cli.check_loop_config(
        config,
        {
            "data.batch_size": config.data.batch_size,
            "eval.batch_size": config.eval.get("batch_size", 256),
        },
    )
    _require(
        config.data.preprocess in preprocessing.PREPROCESSORS,
        "data.preprocess",
        f"must be one of {sorted(preprocessing.PREPROCESSORS)}",
        config.data.preprocess,
    )
    _require(
        config.data.image_size > 0, "data.image_size", "must be positive", config.data.image_size
    )
    _require(config.data.channels > 0, "data.channels", "must be positive", config.data.channels)
    d = config.diffusion
    _require(
        d.precond in PRECONDITIONERS,
        "diffusion.precond",
        f"must be one of {sorted(PRECONDITIONERS)}",
        d.precond,
    )
    _require(d.D is None or d.D > 0, "diffusion.D", "must be positive or None (EDM)", d.D)
    o = config.optimizer
    _require(o.lr > 0, "optimizer.lr", "must be positive", o.lr)
    decay = o.get("decay", "constant")
    _require(
        decay in recipe.LR_DECAYS, "optimizer.decay", f"must be one of {recipe.LR_DECAYS}", decay
    )
    ref = o.get("decay_ref_steps", 1)
    _require(ref > 0, "optimizer.decay_ref_steps", "must be positive", ref)
    _require(
        config.ema.halflife_kimg >= 0, "ema.halflife_kimg", "must be >= 0", config.ema.halflife_kimg
    )
    ratio = config.ema.rampup_ratio
    _require(ratio is None or ratio >= 0, "ema.rampup_ratio", "must be >= 0 or None", ratio)
    if "augment" in config and "p" in config.augment:
        _require(0 <= config.augment.p <= 1, "augment.p", "must be in [0, 1]", config.augment.p)
        _validate_augment(config)
    _validate_model(config)
    _validate_sampler(config)
    _validate_eval(config)


def build(config, mesh, *, workdir=None) -> Task:
    """The task's train state, step, data and evaluators (`config.evals`) on `mesh`.

    workdir: where evaluators write files (samples/step_*.png); None writes none.
    """
    validate(config)
    batch_sharding = parallel.batch_sharding(mesh)
    replicated = parallel.replicated(mesh)
    preprocess = preprocessing.get(config.data.preprocess, config.data.image_size)
    train_source = data.data_source(config.data.name, "train", config.data.data_dir)
    train_iterator = data.train_iterator(
        train_source,
        global_batch_size=config.data.batch_size,
        seed=config.seed,
        preprocess=preprocess,
    )
    network, tx, state, state_shardings = recipe.create_state(config, mesh)
    train_step = training.make_train_step(
        recipe.make_train_loss(network, config),
        tx,
        state_shardings=state_shardings,
        batch_sharding=batch_sharding,
        ema_decay=make_edm_ema_decay(
            config.data.batch_size, config.ema.halflife_kimg, config.ema.rampup_ratio
        ),
    )
    context = {
        "mesh": mesh,
        "batch_sharding": batch_sharding,
        "replicated": replicated,
        "network": network,
        "workdir": workdir,
    }
    eval_fn = evaluators.make_eval_fn(tuple(config.get("evals", ())), config, context)
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    D = config.diffusion.D if config.diffusion.D is not None else "inf (EDM)"
    classes = f", {config.model.num_classes} classes" if config.model.num_classes else ""
    return Task(
        state=state,
        state_shardings=state_shardings,
        train_step=train_step,
        train_iterator=train_iterator,
        batch_sharding=batch_sharding,
        eval_fn=eval_fn,
        summary=(
            f"{type(network).__name__} with {num_params} parameters{classes}; PFGM++ D={D}; "
            f"mesh {dict(mesh.shape)} over {jax.process_count()} processes"
        ),
    )
