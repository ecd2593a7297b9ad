"""Train an S5 sequence classifier.

  python -m train.s5                                   # MNIST-1D, train/configs/s5_mnist1d.py
  python -m train.s5 --config=train/configs/s5_sdigits.py
  python -m train.s5 --config.total_steps=500 --config.mesh.data=-1 --workdir=runs/s5

Writes to the workdir: checkpoints/ (resumed automatically), metrics.jsonl,
tensorboard/, and final_metrics.json (test accuracy of the last step).
"""

import logging
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxml import data, parallel, training
from jaxml.data import preprocess as preprocessing
from jaxml.models.s5 import S5Classifier
from jaxml.ssm.optimizer import s5_optimizer
from jaxml.training import cli, loop

cli.define_flags(str(Path(__file__).parent / "configs" / "s5_mnist1d.py"))
log = logging.getLogger("train.s5")


def make_loss_fn(model):
    def loss_fn(params, model_state, batch, rng):
        logp, updates = model.apply(
            {"params": params, **model_state},
            batch["inputs"],
            train=True,
            rngs={"dropout": rng},
            mutable=list(model_state),
        )
        nll = -jnp.take_along_axis(logp, batch["label"][:, None], axis=-1)[:, 0]
        accuracy = jnp.mean(jnp.argmax(logp, -1) == batch["label"])
        return jnp.mean(nll), (dict(updates), {"accuracy": accuracy})

    return loss_fn


def make_metric_fn(model):
    def metric_fn(params, model_state, batch):
        logp = model.apply({"params": params, **model_state}, batch["inputs"], train=False)
        nll = -jnp.take_along_axis(logp, batch["label"][:, None], axis=-1)[:, 0]
        correct = (jnp.argmax(logp, -1) == batch["label"]).astype(jnp.float32)
        mask = batch["mask"]
        return {
            "loss": training.masked_sum(nll, mask),
            "accuracy": training.masked_sum(correct, mask),
            "count": jnp.sum(mask.astype(jnp.float32)),
        }

    return metric_fn


def validate(config):
    cli.check_loop_config(
        config,
        {
            "data.batch_size": config.data.batch_size,
            "data.eval_batch_size": config.data.eval_batch_size,
        },
    )


def main(config, workdir):
    validate(config)
    mesh = parallel.make_mesh(config.mesh)
    batch_sharding = parallel.batch_sharding(mesh)
    log.info("mesh %s over %d processes", dict(mesh.shape), jax.process_count())

    preprocess = preprocessing.get(config.data.preprocess, config.data.get("image_size"))
    train_source = data.data_source(config.data.name, "train", config.data.data_dir)
    test_source = data.data_source(config.data.name, config.data.eval_split, config.data.data_dir)
    train_iterator = data.train_iterator(
        train_source,
        global_batch_size=config.data.batch_size,
        seed=config.seed,
        preprocess=preprocess,
    )
    steps_per_epoch = len(train_source) // config.data.batch_size

    model = S5Classifier(num_classes=config.data.num_classes, **config.model)
    warmup_steps = int(config.optimizer.warmup_epochs * steps_per_epoch)
    if warmup_steps >= config.total_steps:
        raise cli.ConfigError(
            f"warmup ({config.optimizer.warmup_epochs} epochs = {warmup_steps} steps) must be "
            f"shorter than config.total_steps={config.total_steps}; "
            "lower config.optimizer.warmup_epochs"
        )
    tx = s5_optimizer(
        total_steps=config.total_steps,
        warmup_steps=warmup_steps,
        ssm_lr=config.optimizer.ssm_lr,
        lr_factor=config.optimizer.lr_factor,
        weight_decay=config.optimizer.weight_decay,
    )
    example = preprocess(
        next(data.eval_batches(test_source, global_batch_size=2, process_index=0, process_count=1))
    )["inputs"]
    init_fn = lambda rng: model.init(
        {"params": rng, "dropout": rng}, jnp.asarray(example), train=False
    )
    state, state_shardings = training.create_train_state(
        init_fn, tx, jax.random.PRNGKey(config.seed), mesh, fsdp_min_size=config.fsdp_min_size
    )
    log.info(
        "S5 classifier with %d parameters, %d steps/epoch",
        sum(x.size for x in jax.tree.leaves(state.params)),
        steps_per_epoch,
    )

    train_step = training.make_train_step(
        make_loss_fn(model), tx, state_shardings=state_shardings, batch_sharding=batch_sharding
    )
    eval_step = training.make_eval_step(
        make_metric_fn(model), state_shardings=state_shardings, batch_sharding=batch_sharding
    )

    def eval_fn(state):
        batches = data.eval_batches(
            test_source, global_batch_size=config.data.eval_batch_size, preprocess=preprocess
        )
        to_global = lambda b: parallel.global_batch(b, batch_sharding)
        return training.evaluate(eval_step, state, batches, to_global)

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
            f"step {config.total_steps}: test accuracy {final['accuracy']:.4f}, "
            f"test loss {final['loss']:.4f}"
        )


if __name__ == "__main__":
    cli.run_main(main)
