"""Sample images from a trained diffusion checkpoint (EMA params), batch sharded over all devices.

  python -m train.sample --workdir=runs/diffusion_digits --num_samples=1000
  python -m train.sample --workdir=runs/diffusion_digits --sampler=heun \
      --config.sampler.num_steps=35

Model and sampler settings come from the config saved with the checkpoint;
`--config.*` flags override fields of it (e.g. sampler settings). Writes
<out>/samples.png (a grid), <out>/samples.npz (float images in [-1, 1]) and
<out>/info.json (sampler, NFE, and FD-digits for digits models).
"""

import json
import logging
import sys
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import flags
from etils import epath

from jaxml import parallel, training
from jaxml.diffusion import metrics, recipe
from jaxml.diffusion.image_grid import save_image_grid
from jaxml.training import cli
from jaxml.training.checkpoint import Checkpointer

cli.define_flags(str(Path(__file__).parent / "configs" / "diffusion_digits.py"))
flags.DEFINE_integer("num_samples", 256, "How many images (a multiple of the device count).")
flags.DEFINE_string("sampler", None, "euler | heun | stochastic | restart (default: the config's).")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.DEFINE_string("out", None, "Output folder (default <workdir>/sample_<step>_<sampler>).")
flags.DEFINE_integer("seed", 0, "Seed of the latents and of the sampler's noise.")
log = logging.getLogger("train.sample")


def overridden_keys(argv) -> list[str]:
    return [a[len("--config.") :].split("=", 1)[0] for a in argv if a.startswith("--config.")]


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


def main(config, workdir):
    fl = flags.FLAGS
    checkpointer = Checkpointer(workdir / "checkpoints", save_every=1)
    step = fl.step if fl.step is not None else checkpointer.latest_step()
    if step is None or step not in checkpointer.all_steps():
        raise training.CheckpointError(
            f"no checkpoint {'' if step is None else step} in {checkpointer.directory} "
            f"(have {checkpointer.all_steps()})"
        )
    saved = checkpointer.saved_config(step)
    if saved is None:
        raise training.CheckpointError(
            f"checkpoint {step} in {checkpointer.directory} has no config"
        )
    config = merge_saved_config(saved, config, overridden_keys(sys.argv[1:]))
    if fl.num_samples <= 0 or fl.num_samples % jax.device_count():
        raise cli.ConfigError(
            f"--num_samples={fl.num_samples} must be a positive multiple of the "
            f"device count ({jax.device_count()})"
        )

    mesh = parallel.make_mesh(config.mesh)
    batch_sharding, replicated = parallel.batch_sharding(mesh), parallel.replicated(mesh)
    network, ema_params = recipe.load_ema_params(checkpointer, step, config, mesh)
    checkpointer.close()

    sampler = fl.sampler or config.sampler.name
    sample_fn = recipe.make_sample_fn(network, config, sampler=sampler)
    log.info(
        "sampling %d images with %s from step %d on %d devices",
        fl.num_samples,
        sampler,
        step,
        jax.device_count(),
    )
    images, nfe = recipe.sample_images(
        sample_fn,
        ema_params,
        jax.random.PRNGKey(fl.seed),
        config,
        fl.num_samples,
        batch_sharding=batch_sharding,
        replicated=replicated,
    )
    info = {"step": step, "sampler": sampler, "nfe": nfe, "num_samples": fl.num_samples}
    if config.data.name == "digits":
        info["fd_digits"] = metrics.fd_digits(images, data_dir=config.data.data_dir)
    if jax.process_index() == 0:
        out = epath.Path(fl.out) if fl.out else workdir / f"sample_{step}_{sampler}"
        out.mkdir(parents=True, exist_ok=True)
        save_image_grid(images[:256], out / "samples.png", scale=4)
        with (out / "samples.npz").open("wb") as f:
            np.savez_compressed(f, images=images)
        (out / "info.json").write_text(json.dumps(info, indent=2))
        print(
            f"{fl.num_samples} samples ({sampler}, NFE {nfe}) in {out}"
            + (f"; FD-digits {info['fd_digits']:.3f}" if "fd_digits" in info else "")
        )


if __name__ == "__main__":
    cli.run_main(main)
