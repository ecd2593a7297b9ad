"""The S5 optimizer recipes (lindermanlab/S5 opt_config + dt_global): parameter groups,
learning rates, weight decay, schedules."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxml.models.s5 import S5Classifier
from jaxml.ssm import s5_optimizer, s5_param_labels, s5_schedules
from jaxml.ssm.optimizer import official_cosine

MODEL = S5Classifier(
    num_classes=3,
    d_model=8,
    n_layers=1,
    state_size=8,
    blocks=2,
    activation="full_glu",
    bidirectional=True,
)
X = jax.random.normal(jax.random.key(2), (2, 9, 3))
Y = jnp.array([0, 2])

# The group the official recipe gives each parameter of this classifier, written out by hand
# from lindermanlab/S5 train_helpers.create_train_state (columns: standard, BandCdecay,
# BfastandCdecay, noBCdecay). ssm = Adam at ssm_lr; regular = AdamW at lr; regular_ssm_lr =
# AdamW at ssm_lr (BandCdecay's "none" group); no_decay = Adam at lr: norms and biases, which
# the official code decays (its "norm" key never matched a leaf) and we deliberately do not.
S, R, RS, N = "ssm", "regular", "regular_ssm_lr", "no_decay"
OFFICIAL_GROUPS = {
    "encoder/encoder/kernel": (R, R, R, R),
    "encoder/encoder/bias": (N, N, N, N),
    "encoder/layers_0/norm/scale": (N, N, N, N),
    "encoder/layers_0/norm/bias": (N, N, N, N),
    "encoder/layers_0/ssm/Lambda_re": (S, S, S, S),
    "encoder/layers_0/ssm/Lambda_im": (S, S, S, S),
    "encoder/layers_0/ssm/B": (S, RS, R, S),
    "encoder/layers_0/ssm/C": (R, R, R, S),
    "encoder/layers_0/ssm/D": (R, R, R, S),
    "encoder/layers_0/ssm/log_step": (S, S, S, S),  # dt_global=True: R under every recipe
    "encoder/layers_0/out1/kernel": (R, R, R, R),
    "encoder/layers_0/out1/bias": (N, N, N, N),
    "encoder/layers_0/out2/kernel": (R, R, R, R),
    "encoder/layers_0/out2/bias": (N, N, N, N),
    "decoder/kernel": (R, R, R, R),
    "decoder/bias": (N, N, N, N),
}
RECIPES = ("standard", "BandCdecay", "BfastandCdecay", "noBCdecay")


def expected(recipe: str, dt_global: bool) -> dict:
    column = RECIPES.index(recipe)
    table = {path: groups[column] for path, groups in OFFICIAL_GROUPS.items()}
    if dt_global:
        table["encoder/layers_0/ssm/log_step"] = R
    return table


@pytest.fixture(scope="module")
def variables():
    return jax.jit(MODEL.init)(jax.random.key(0), X)


def flat(tree):
    return {
        "/".join(k.key for k in path): v
        for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


@pytest.mark.parametrize("dt_global", [False, True])
@pytest.mark.parametrize("recipe", RECIPES)
def test_every_parameter_lands_in_the_official_group(variables, recipe, dt_global):
    labels = flat(s5_param_labels(variables["params"], recipe, dt_global))
    assert labels == expected(recipe, dt_global)


@pytest.mark.parametrize(
    "recipe, dt_global", [("standard", True), ("BandCdecay", False), ("noBCdecay", False)]
)
def test_learning_rate_and_weight_decay_of_each_group(variables, recipe, dt_global):
    """What each group does to a parameter, read off the updates (not off our labels)."""
    params = variables["params"]
    ssm_lr, lr_factor, wd = 1e-3, 3.0, 0.1
    lr_of = {S: ssm_lr, R: lr_factor * ssm_lr, RS: ssm_lr, N: lr_factor * ssm_lr}
    table = expected(recipe, dt_global)
    flat_params = flat(params)
    kw = dict(opt_config=recipe, dt_global=dt_global, warmup_steps=0, total_steps=None)

    # Zero gradients: only decoupled weight decay moves a parameter, by -lr * wd * param.
    tx = s5_optimizer(ssm_lr, lr_factor, wd, **kw)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    for path, u in flat(updates).items():
        decays = table[path] in (R, RS)
        want = -lr_of[table[path]] * wd * flat_params[path] if decays else 0.0
        np.testing.assert_allclose(np.asarray(u), want, rtol=1e-5, atol=1e-12, err_msg=path)

    # Gradients of ones, no decay: Adam's first step has size lr, so each group shows its lr.
    tx = s5_optimizer(ssm_lr, lr_factor, 0.0, **kw)
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    for path, u in flat(updates).items():
        np.testing.assert_allclose(np.asarray(u), -lr_of[table[path]], rtol=1e-4, err_msg=path)


def official_lr_per_step(base, steps_per_epoch, epochs, warmup_epochs, lr_min):
    """Transcribed from lindermanlab/S5 train.py / train_helpers.py: per epoch, linear_warmup
    (end_step = steps_per_epoch * warmup_end) during warmup, else cosine_annealing with
    end_step = steps_per_epoch * epochs - steps_per_epoch * warmup_end, on the global step."""
    lrs, step = [], 0
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            if epoch < warmup_epochs:
                lrs.append(base * (step + 1) / (steps_per_epoch * warmup_epochs))
            else:
                end = steps_per_epoch * epochs - steps_per_epoch * warmup_epochs
                count = min(step, end)
                lrs.append((base - lr_min) * 0.5 * (1 + math.cos(math.pi * count / end)) + lr_min)
            step += 1
    return np.array(lrs)


def test_official_cosine_matches_the_official_loop():
    want = official_lr_per_step(3e-3, steps_per_epoch=7, epochs=10, warmup_epochs=1, lr_min=1e-6)
    schedule = official_cosine(3e-3, warmup_steps=7, total_steps=70, lr_min=1e-6)
    got = np.array([float(schedule(k)) for k in range(70)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)
    # The quirk: right after warmup the lr is already below the peak, the last epoch is flat.
    assert got[7] < 0.99 * 3e-3 and np.allclose(got[-7:], 1e-6)
    # Through s5_schedules (no warmup, as the IMDB recipe): a plain cosine over T steps.
    _, regular = s5_schedules(1e-3, 4.0, 0, 50, schedule="official_cosine")
    nowarm = official_lr_per_step(4e-3, steps_per_epoch=5, epochs=10, warmup_epochs=0, lr_min=0)
    np.testing.assert_allclose([float(regular(k)) for k in range(50)], nowarm, rtol=1e-5, atol=1e-9)


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
    with pytest.raises(ValueError, match="schedule"):
        s5_schedules(total_steps=10, schedule="linear")


def test_a_few_steps_lower_the_loss(variables):
    tx = s5_optimizer(
        ssm_lr=1e-2,
        lr_factor=1.0,
        weight_decay=0.05,
        warmup_steps=2,
        total_steps=20,
        opt_config="BfastandCdecay",
        schedule="official_cosine",
    )
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
