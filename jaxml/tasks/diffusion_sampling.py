"""Sampling a trained diffusion checkpoint: what `python -m train.sample` does.

The model, data and diffusion settings come from the config saved with the checkpoint (the
only config the weights fit). `--config.key=value` / `--config.key value` flags override
fields of it (e.g. sampler settings). `--config=FILE` is refused when the checkpoint has a
saved config (a file would silently disagree with the weights); it is used only for a
checkpoint saved without one.
"""

import json
import logging
import time
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from etils import epath

from jaxml import parallel
from jaxml.diffusion import metrics, recipe
from jaxml.diffusion.image_grid import save_image_grid
from jaxml.tasks import diffusion
from jaxml.training import cli
from jaxml.training.checkpoint import Checkpointer, CheckpointError

log = logging.getLogger(__name__)


def overridden_keys(argv: Sequence[str]) -> list[str]:
    """Config keys set by `--config.key=value` or `--config.key value` in argv."""
    keys = []
    for arg in argv:
        if arg.startswith("--config."):
            keys.append(arg[len("--config.") :].split("=", 1)[0])
    return keys


def config_file_given(argv: Sequence[str]) -> str | None:
    """The FILE of `--config=FILE` or `--config FILE` in argv, else None."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg[len("--config=") :]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def merge_saved_config(saved: dict, config, keys) -> ml_collections.ConfigDict:
    """The checkpoint's config, with the `keys` given as --config.* flags taken from `config`."""
    merged = ml_collections.ConfigDict(saved)
    for key in keys:
        *parents, leaf = key.split(".")
        target, source = merged, config
        for p in parents:
            target, source = target[p], source[p]
        with target.unlocked():
            target[leaf] = source[leaf]
    return merged


def open_checkpoint(workdir, step: int | None) -> tuple[Checkpointer, int]:
    """(checkpointer, step) of <workdir>/checkpoints; CheckpointError (nothing created) if the
    workdir, its checkpoints/ or the step does not exist."""
    workdir = epath.Path(workdir)
    directory = workdir / "checkpoints"
    if not directory.is_dir():  # checked first: Checkpointer would create it
        where = f"no checkpoints/ folder in {workdir}" if workdir.is_dir() else f"no {workdir}"
        raise CheckpointError(f"{where}: is --workdir the folder a training run wrote?")
    checkpointer = Checkpointer(directory, save_every=1)
    steps = checkpointer.all_steps()
    if step is None:
        step = checkpointer.latest_step()
        if step is None:
            checkpointer.close()
            raise CheckpointError(f"no checkpoint in {directory}")
    elif step not in steps:
        checkpointer.close()
        raise CheckpointError(f"no checkpoint of step {step} in {directory} (have {steps})")
    return checkpointer, step


def resolve_config(checkpointer, step: int, config, argv: Sequence[str]):
    """The config to sample with: the saved one plus --config.* overrides (see module doc)."""
    saved = checkpointer.saved_config(step)
    config_file = config_file_given(argv)
    if saved is None:
        if config_file is None:
            raise CheckpointError(
                f"checkpoint {step} in {checkpointer.directory} has no saved config: "
                "pass the training config as --config=FILE"
            )
        log.warning("checkpoint %d has no saved config: using %s", step, config_file)
        return config
    if config_file is not None:
        raise cli.ConfigError(
            f"--config={config_file}: train.sample uses the config saved with the checkpoint; "
            "change fields of it with --config.key=value instead"
        )
    return merge_saved_config(saved, config, overridden_keys(argv))


def run(
    config,
    workdir,
    argv: Sequence[str],
    *,
    num_samples: int,
    step: int | None = None,
    sampler: str | None = None,
    out=None,
    seed: int = 0,
    label: int | None = None,
) -> dict:
    """Samples `num_samples` images of a checkpoint into `out`; returns the info it writes.

    Writes out/samples_<start>.npz shards as the micro-batches come (images in [-1, 1],
    labels, indices), out/samples.png (the first 256) and out/info.json (with
    `metrics.evaluate_digits` for a digits model: then the images are also kept in memory,
    256 bytes per 8×8 image).
    """
    if num_samples <= 0:
        raise cli.ConfigError(f"--num_samples={num_samples} must be positive")
    workdir = epath.Path(workdir)
    checkpointer, step = open_checkpoint(workdir, step)
    try:
        config = resolve_config(checkpointer, step, config, argv)
        if sampler:
            config = config.copy_and_resolve_references()
            with config.unlocked():
                config.sampler.name = sampler
        diffusion.validate_sampling(config)
        if label is not None and not 0 <= label < config.model.num_classes:
            raise cli.ConfigError(
                f"--label={label} needs a conditional model with more than {label} classes "
                f"(config.model.num_classes={config.model.num_classes})"
            )
        mesh = parallel.make_mesh(config.mesh)
        network, ema_params = recipe.load_ema_params(checkpointer, step, config, mesh)
    finally:
        checkpointer.close()

    sample_fn = recipe.make_sample_fn(network, config)
    name = config.sampler.name
    out = epath.Path(out) if out else workdir / f"sample_{step}_{name}"
    labels = None if label is None else np.full((num_samples,), label, np.int32)
    log.info("sampling %d images with %s from step %d", num_samples, name, step)
    keep_all = config.data.name == "digits"
    kept, start_time = [], time.perf_counter()
    for start, images, chunk_labels in recipe.sample_chunks(
        sample_fn,
        ema_params,
        jax.random.PRNGKey(seed),
        config,
        num_samples,
        batch_sharding=parallel.batch_sharding(mesh),
        replicated=parallel.replicated(mesh),
        labels=labels,
    ):
        if jax.process_index() == 0:
            recipe.write_shard(out, start, images, chunk_labels)
        if keep_all or start < 256:
            kept.append(images)
    images = np.concatenate(kept)
    info = {
        "step": step,
        "sampler": name,
        "nfe": sample_fn.nfe,
        "num_samples": num_samples,
        "guidance": config.sampler.get("guidance", 1.0),
        "label": label,  # None: labels cycle through the classes
        "seconds": time.perf_counter() - start_time,
    }
    if config.data.name == "digits":
        info["digits_evaluation"] = metrics.evaluate_digits(images, data_dir=config.data.data_dir)
        info["fd_digits"] = info["digits_evaluation"]["fd_train"]
    if jax.process_index() == 0:
        save_image_grid(images[:256], out / "samples.png", scale=4)
        (out / "info.json").write_text(json.dumps(info, indent=2))
    return {**info, "out": str(out)}
