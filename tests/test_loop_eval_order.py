"""The eval of a step runs after that step's checkpoint is saved (jaxml.training.loop)."""

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxml import parallel, training
from jaxml.training import loop


def test_a_failing_eval_does_not_cost_the_step(tmp_path):
    mesh = parallel.make_mesh({"data": 1}, devices=jax.devices()[:1])
    tx = optax.sgd(0.1)

    def loss_fn(params, model_state, batch, rng):
        return jnp.mean((params["w"] * batch["x"]) ** 2), (model_state, {})

    state, shardings = training.create_train_state(
        lambda rng: {"params": {"w": jnp.ones(3)}}, tx, jax.random.PRNGKey(0), mesh
    )
    batch_sharding = parallel.batch_sharding(mesh)
    step = training.make_train_step(
        loss_fn, tx, state_shardings=shardings, batch_sharding=batch_sharding
    )
    batches = (
        grain.MapDataset.range(100)
        .map(lambda i: {"x": np.full((4, 3), i % 5, np.float32)})
        .to_iter_dataset()
    )
    config = ml_collections.ConfigDict(
        dict(
            total_steps=6,
            log_every=2,
            eval_every=2,
            checkpoint_every=2,
            checkpoints_to_keep=5,
        )
    )
    evaluated = []

    def eval_fn(state):
        evaluated.append(int(state.step))
        if int(state.step) == 4:
            raise RuntimeError("eval failed")
        return {"x": 1.0}

    with pytest.raises(RuntimeError, match="eval failed"):
        loop.run(
            workdir=tmp_path,
            config=config,
            state=state,
            state_shardings=shardings,
            train_step=step,
            train_iterator=iter(batches),
            batch_sharding=batch_sharding,
            eval_fn=eval_fn,
        )
    assert evaluated == [2, 4]
    checkpointer = training.Checkpointer(tmp_path / "checkpoints", save_every=1)
    assert checkpointer.all_steps()[-2:] == [2, 4]  # step 4 was saved before its eval failed
    checkpointer.close()
