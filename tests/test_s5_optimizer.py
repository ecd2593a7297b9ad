"""The S5 optimizer recipe: parameter groups, learning rates, weight decay, schedule."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxml.models.s5 import S5Classifier
from jaxml.ssm import s5_optimizer, s5_param_labels, s5_schedules

MODEL = S5Classifier(
    num_classes=3, d_model=8, n_layers=2, state_size=8, blocks=2, activation="full_glu"
)
X = jax.random.normal(
    jax.random.key(2), (2, 9, 3)
)  # same shape as test_s5_models: shared eager compiles
Y = jnp.array([0, 2])


@pytest.fixture(scope="module")
def variables():
    return MODEL.init(jax.random.key(0), X)


def expected_group(path: tuple) -> str:
    """The intended group, stated from the module layout rather than leaf names alone."""
    module, leaf = path[-2], path[-1]
    if module == "ssm" and leaf in ("B", "Lambda_re", "Lambda_im", "log_step"):
        return "ssm"
    if module == "norm" or leaf == "bias":
        return "no_decay"
    assert leaf in ("kernel", "C", "D"), path
    return "decay"


def flat(tree):
    return {
        tuple(k.key for k in path): v for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def test_every_parameter_lands_in_its_group(variables):
    labels = flat(s5_param_labels(variables["params"]))
    for path, label in labels.items():
        assert label == expected_group(path), path
    counts = {g: sum(label == g for label in labels.values()) for g in ("ssm", "decay", "no_decay")}
    # Per layer: 4 SSM params; C, D, out1/out2 kernels; norm scale+bias, out1/out2 biases.
    # Plus the encoder and decoder Dense (kernel: decay, bias: no_decay).
    assert counts == {"ssm": 4 * 2, "decay": 4 * 2 + 2, "no_decay": 4 * 2 + 2}


def test_learning_rates_and_weight_decay_per_group(variables):
    params = variables["params"]
    ssm_lr, lr_factor, wd = 1e-3, 3.0, 0.1
    tx = s5_optimizer(ssm_lr, lr_factor, wd, warmup_steps=0, total_steps=None)
    labels = flat(s5_param_labels(params))
    flat_params = flat(params)

    # Zero gradients: only weight decay moves parameters, and only in the "decay" group
    # (decoupled decay: update = -lr * wd * param).
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    for path, u in flat(updates).items():
        want = -lr_factor * ssm_lr * wd * flat_params[path] if labels[path] == "decay" else 0.0
        np.testing.assert_allclose(np.asarray(u), want, rtol=1e-5, atol=1e-12)

    # Gradients of ones, no decay: Adam's first step has size lr, so each group shows its lr.
    tx = s5_optimizer(ssm_lr, lr_factor, 0.0, warmup_steps=0, total_steps=None)
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    for path, u in flat(updates).items():
        lr = ssm_lr if labels[path] == "ssm" else lr_factor * ssm_lr
        np.testing.assert_allclose(np.asarray(u), -lr, rtol=1e-4)


def test_schedule_is_linear_warmup_then_cosine():
    ssm_schedule, schedule = s5_schedules(
        ssm_lr=2e-3, lr_factor=2.0, warmup_steps=10, total_steps=110, lr_min=1e-5
    )
    peak = 4e-3
    assert math.isclose(float(schedule(0)), peak / 10, rel_tol=1e-5)
    assert math.isclose(float(schedule(5)), peak / 10 + 0.5 * (peak - peak / 10), rel_tol=1e-5)
    assert math.isclose(float(schedule(10)), peak, rel_tol=1e-5)
    mid = 1e-5 + (peak - 1e-5) * 0.5 * (1 + math.cos(math.pi * 0.5))
    assert math.isclose(float(schedule(60)), mid, rel_tol=1e-5)
    assert math.isclose(float(schedule(110)), 1e-5, rel_tol=1e-5)
    assert math.isclose(float(ssm_schedule(10)), 2e-3, rel_tol=1e-5)
    with pytest.raises(ValueError, match="total_steps"):
        s5_schedules(warmup_steps=10, total_steps=10)


def test_a_few_steps_lower_the_loss(variables):
    tx = s5_optimizer(ssm_lr=1e-2, lr_factor=1.0, weight_decay=0.05, warmup_steps=2, total_steps=20)
    params, batch_stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)

    @jax.jit
    def step(params, batch_stats, opt_state):
        def loss_fn(p):
            logp, upd = MODEL.apply(
                {"params": p, "batch_stats": batch_stats}, X, train=True, mutable=["batch_stats"]
            )
            return -jnp.mean(jnp.take_along_axis(logp, Y[:, None], axis=1)), upd["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    losses = []
    for _ in range(8):
        params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state)
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0], losses
