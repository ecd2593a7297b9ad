"""Train a diffusion / PFGM++ image model; every eval writes Restart samples and FD-digits.

  python -m train.diffusion                                 # PFGM++ D=128 on embedded 8x8 digits
  python -m train.diffusion --config=train/configs/diffusion_digits.py:edm      # D = inf (EDM)
  python -m train.diffusion --config=train/configs/diffusion_digits.py:pfgmpp16 # 16x16 digits
  python -m train.diffusion --config=train/configs/diffusion_cifar10.py         # needs CIFAR-10

Writes to the workdir: checkpoints/ (resumed automatically), metrics.jsonl,
tensorboard/, samples/step_*.png (a grid of EMA samples per eval) and
final_metrics.json.
"""

import logging
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxml import data, parallel, training
from jaxml.data import preprocess as preprocessing
from jaxml.diffusion import metrics, recipe
from jaxml.diffusion.image_grid import save_image_grid
from jaxml.training import cli, loop, posthoc_ema
from jaxml.training.ema import edm_ema_decay

cli.define_flags(str(Path(__file__).parent / "configs" / "diffusion_digits.py"))
log = logging.getLogger("train.diffusion")


def validate(config):
    cli.check_loop_config(
        config,
        {"data.batch_size": config.data.batch_size, "eval.num_samples": config.eval.num_samples},
    )
    if config.diffusion.D is not None and config.diffusion.D <= 0:
        raise cli.ConfigError(
            f"config.diffusion.D must be positive or None, got {config.diffusion.D}"
        )


def main(config, workdir):
    validate(config)
    mesh = parallel.make_mesh(config.mesh)
    batch_sharding = parallel.batch_sharding(mesh)
    replicated = parallel.replicated(mesh)
    log.info("mesh %s over %d processes", dict(mesh.shape), jax.process_count())

    preprocess = preprocessing.get(config.data.preprocess, config.data.image_size)
    train_source = data.data_source(config.data.name, "train", config.data.data_dir)
    train_iterator = data.train_iterator(
        train_source,
        global_batch_size=config.data.batch_size,
        seed=config.seed,
        preprocess=preprocess,
    )

    network = recipe.build_network(config.model)
    tx = recipe.make_optimizer(config)
    example = jnp.zeros((2, *recipe.image_shape(config)), jnp.float32)
    labels = jnp.zeros((2,), jnp.int32) if config.model.num_classes else None
    init_fn = lambda rng: network.init(rng, example, jnp.zeros((2,)), labels)
    state, state_shardings = training.create_train_state(
        init_fn,
        tx,
        jax.random.PRNGKey(config.seed),
        mesh,
        use_ema=True,
        posthoc_sigma_rels=posthoc_ema.tracked_sigma_rels(config),
        fsdp_min_size=config.fsdp_min_size,
    )
    log.info(
        "U-Net with %d parameters; PFGM++ D=%s",
        sum(x.size for x in jax.tree.leaves(state.params)),
        config.diffusion.D if config.diffusion.D is not None else "inf (EDM)",
    )

    batch_size = config.data.batch_size
    ema_decay = lambda step: edm_ema_decay(
        step, batch_size, config.ema.halflife_kimg, config.ema.rampup_ratio
    )
    train_step = training.make_train_step(
        recipe.make_train_loss(network, config),
        tx,
        state_shardings=state_shardings,
        batch_sharding=batch_sharding,
        ema_decay=ema_decay,
    )

    sample_fn = recipe.make_sample_fn(network, config)
    samples_dir = workdir / "samples"
    uses_digits_fd = config.data.name == "digits"

    def eval_fn(state):
        key = jax.random.PRNGKey(config.eval.seed)  # same latents every eval: comparable grids
        images, nfe = recipe.sample_images(
            sample_fn,
            state.ema_params,
            key,
            config,
            config.eval.num_samples,
            batch_sharding=batch_sharding,
            replicated=replicated,
        )
        step = int(jax.device_get(state.step))
        results = {"nfe": float(nfe)}
        if uses_digits_fd:
            results["fd_digits"] = metrics.fd_digits(images, data_dir=config.data.data_dir)
        if config.eval.fid_reference_stats:
            results["fid"] = metrics.fid(
                images, config.eval.fid_reference_stats, weights_path=config.eval.inception_weights
            )
        if jax.process_index() == 0:
            save_image_grid(
                images[: config.eval.grid_size],
                samples_dir / f"step_{step:07d}.png",
                scale=config.eval.grid_scale,
            )
        return results

    state, eval_metrics = loop.run(
        workdir=workdir,
        config=config,
        state=state,
        state_shardings=state_shardings,
        train_step=train_step,
        train_iterator=train_iterator,
        batch_sharding=batch_sharding,
        eval_fn=eval_fn,
    )
    final = loop.finish(workdir, config, state, eval_metrics, eval_fn)
    if final is not None and jax.process_index() == 0:
        print(
            f"step {config.total_steps}: "
            + ", ".join(f"{k} {v:.4g}" for k, v in final.items())
            + f"; samples in {samples_dir}"
        )


if __name__ == "__main__":
    cli.run_main(main)
