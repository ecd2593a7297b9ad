"""NaN/Inf in loss or gradients: the update is skipped, counted, and nan_policy decides the rest."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import s5_runs

from jaxml import parallel, training


def _toy_step_and_state():
    mesh = parallel.make_mesh({"data": 1}, devices=jax.devices()[:1])
    tx = optax.adam(0.1)

    def loss_fn(params, model_state, batch, rng):
        err = params["w"] * batch["x"] - batch["y"]
        # A poisoned batch makes the loss (and every gradient) NaN, as a bad record would.
        loss = jnp.mean(err**2) * jnp.where(batch["poison"][0], jnp.nan, 1.0)
        # Like BatchNorm's running statistics: a count of the updates that were applied.
        counted = {"stats": {"updates": model_state["stats"]["updates"] + 1}}
        return loss, (counted, {})

    init_fn = lambda rng: {"params": {"w": jnp.arange(3.0)}, "stats": {"updates": jnp.zeros(())}}
    state, shardings = training.create_train_state(
        init_fn, tx, jax.random.PRNGKey(0), mesh, use_ema=True
    )
    step = training.make_train_step(
        loss_fn,
        tx,
        state_shardings=shardings,
        batch_sharding=parallel.batch_sharding(mesh),
        ema_decay=0.5,
    )
    return step, state, tx


def _batch(i, poison):
    rng = np.random.default_rng(i)
    return {
        "x": rng.normal(size=(4, 3)).astype(np.float32),
        "y": rng.normal(size=(4, 3)).astype(np.float32),
        "poison": np.full((4,), poison),
    }


def test_nonfinite_step_keeps_state_and_counts():
    step, state, tx = _toy_step_and_state()
    poison = [False, True, False, True, True, False]
    # Independent reference: plain optax on the finite batches only, EMA by hand.
    w, opt, ema = np.arange(3.0, dtype=np.float32), tx.init(jnp.arange(3.0)), np.arange(3.0)
    for i, p in enumerate(poison):
        before = jax.device_get(state)
        state, metrics = step(state, _batch(i, p))
        if p:
            assert not np.isfinite(float(metrics["loss"]))
            for x, y in zip(jax.tree.leaves(before.params), jax.tree.leaves(state.params)):
                np.testing.assert_array_equal(x, y)
            for x, y in zip(jax.tree.leaves(before.opt_state), jax.tree.leaves(state.opt_state)):
                np.testing.assert_array_equal(x, y)
            np.testing.assert_array_equal(before.ema_params["w"], state.ema_params["w"])
        else:
            b = _batch(i, False)
            g = jax.grad(lambda w, b: jnp.mean((w * b["x"] - b["y"]) ** 2))(jnp.asarray(w), b)
            updates, opt = tx.update(g, opt, jnp.asarray(w))
            w = np.asarray(optax.apply_updates(jnp.asarray(w), updates))
            ema = 0.5 * ema + 0.5 * w
            np.testing.assert_allclose(state.params["w"], w, rtol=1e-6)
            np.testing.assert_allclose(state.ema_params["w"], ema, rtol=1e-6)
        assert int(metrics["nonfinite_count"]) == sum(poison[: i + 1])
        # The model state (e.g. BatchNorm statistics) moves with the applied updates only.
        assert float(state.model_state["stats"]["updates"]) == i + 1 - sum(poison[: i + 1])
    assert int(state.step) == len(poison)
    assert int(state.nonfinite_count) == 3
    assert int(state.first_nonfinite_step) == 1  # 0-based index of the step that ran
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(state)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


# A learning rate this large sends the S5 classifier to Inf/NaN at its second step.
DIVERGENT = "--config.optimizer.ssm_lr=1e10"


def test_nan_policy_stop_names_the_step_and_saves_nothing_after(tmp_path, data_dir):
    proc = s5_runs.run(tmp_path, data_dir, DIVERGENT, check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "NaN/Inf at step 2" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert s5_runs.saved_steps(tmp_path) == [1]  # saved before the NaN, nothing after it
    saved = s5_runs.load_state(tmp_path, 1)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(saved["params"]))


def test_nan_policy_skip_counts_and_finishes_with_finite_params(tmp_path, data_dir):
    proc = s5_runs.run(tmp_path, data_dir, DIVERGENT, "--config.nan_policy=skip")
    assert "skipped" in proc.stderr and "NaN/Inf" in proc.stderr
    final = s5_runs.load_state(tmp_path, 24)
    assert int(final["nonfinite_count"]) > 0 and int(final["first_nonfinite_step"]) == 1
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(final["params"]))
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(final["opt_state"]))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    counts = [r["train/nonfinite_count"] for r in rows if "train/nonfinite_count" in r]
    assert counts[-1] == int(final["nonfinite_count"])


def test_bad_nan_policy_is_a_config_error(tmp_path, data_dir):
    proc = s5_runs.run(tmp_path, data_dir, "--config.nan_policy=ignore", check=False)
    assert proc.returncode == 2
    assert "config.nan_policy must be one of" in proc.stderr and "Traceback" not in proc.stderr
