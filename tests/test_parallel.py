"""Mesh construction and sharded training: 1 device, data=8 and data=2 x fsdp=4 agree."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from jaxml import parallel, training


def test_mesh_shapes():
    assert parallel.resolve_mesh_shape({"data": -1}, 8) == (8, 1)
    assert parallel.resolve_mesh_shape({"data": 2, "fsdp": -1}, 8) == (2, 4)
    assert parallel.resolve_mesh_shape({"data": 1, "fsdp": 1}, 1) == (1, 1)
    mesh = parallel.make_mesh({"data": 2, "fsdp": 4})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4}


@pytest.mark.parametrize(
    "shape, message",
    [
        ({"data": 3}, "needs 3 devices but 8"),
        ({"data": 3, "fsdp": -1}, "not divisible by 3"),
        ({"data": -1, "fsdp": -1}, "at most one"),
        ({"model": 2}, "unknown mesh axes"),
        ({"data": 0}, "positive"),
    ],
)
def test_mesh_that_does_not_fit_is_a_clear_error(shape, message):
    with pytest.raises(parallel.MeshShapeError, match=message):
        parallel.make_mesh(shape)


def test_fsdp_rule_shards_largest_divisible_dimension():
    assert parallel.fsdp_partition_spec((256, 1024), 4) == P(None, "fsdp")
    assert parallel.fsdp_partition_spec((1024, 250), 4) == P("fsdp", None)
    assert parallel.fsdp_partition_spec((1023, 250), 4) == P()  # nothing divisible
    assert parallel.fsdp_partition_spec((64,), 4) == P()  # too small to be worth it
    assert parallel.fsdp_partition_spec((256, 1024), 1) == P()


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Dense(256, use_bias=False)(x)  # BatchNorm follows: a bias would get ~0 gradient
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.Dropout(0.1, deterministic=not train)(nn.gelu(x))
        return nn.Dense(4)(x)


def loss_fn(params, model_state, batch, rng):
    logits, updates = MLP().apply(
        {"params": params, **model_state},
        batch["x"],
        train=True,
        rngs={"dropout": rng},
        mutable=["batch_stats"],
    )
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
    return loss, (dict(updates), {})


def train_few_steps(mesh_shape, devices, steps=4):
    mesh = parallel.make_mesh(mesh_shape, devices)
    tx = optax.adamw(1e-2)
    x_example = jnp.zeros((2, 64))
    state, shardings = training.create_train_state(
        lambda rng: MLP().init(rng, x_example),
        tx,
        jax.random.PRNGKey(0),
        mesh,
        use_ema=True,
        fsdp_min_size=1024,
    )
    batch_sharding = parallel.batch_sharding(mesh)
    step = training.make_train_step(
        loss_fn, tx, state_shardings=shardings, batch_sharding=batch_sharding, ema_decay=0.9
    )
    rng = np.random.default_rng(0)
    for _ in range(steps):
        batch = {"x": rng.normal(size=(32, 64)).astype(np.float32), "y": rng.integers(0, 4, 32)}
        state, metrics = step(state, parallel.global_batch(batch, batch_sharding))
    return state, shardings


def test_same_steps_on_1_and_8_devices_and_fsdp():
    one, _ = train_few_steps({"data": 1}, jax.devices()[:1])
    data8, _ = train_few_steps({"data": 8}, jax.devices())
    fsdp, shardings = train_few_steps({"data": 2, "fsdp": 4}, jax.devices())
    # The FSDP rule really sharded the big kernel (and its Adam moments).
    assert shardings.params["Dense_0"]["kernel"].spec == P(None, "fsdp")
    assert fsdp.params["Dense_0"]["kernel"].sharding.spec == P(None, "fsdp")
    assert len(fsdp.params["Dense_0"]["kernel"].addressable_shards[0].data.shape) == 2
    assert fsdp.params["Dense_0"]["kernel"].addressable_shards[0].data.shape == (64, 64)
    for other in (data8, fsdp):
        for tree in ("params", "ema_params", "model_state"):
            jax.tree.map(
                lambda a, b: np.testing.assert_allclose(
                    np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6
                ),
                getattr(one, tree),
                getattr(other, tree),
            )
    assert int(fsdp.step) == 4
    # The params moved: training happened (not a no-op compare).
    fresh, _ = train_few_steps({"data": 1}, jax.devices()[:1], steps=0)
    assert not np.allclose(fresh.params["Dense_1"]["kernel"], one.params["Dense_1"]["kernel"])


def test_ema_update_matches_closed_form():
    p0, p1, p2 = 1.0, 3.0, -2.0
    ema = training.step.ema_update({"w": jnp.array(p0)}, {"w": jnp.array(p1)}, 0.9)
    ema = training.step.ema_update(ema, {"w": jnp.array(p2)}, 0.9)
    np.testing.assert_allclose(float(ema["w"]), 0.81 * p0 + 0.09 * p1 + 0.1 * p2, rtol=1e-6)
