"""EDM2 post-hoc EMA: widths, closed-form profiles vs a step-by-step simulation, the
reconstruction, the train-spine hook (snapshots, resume) and its errors."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxml import data, parallel, training
from jaxml.training import loop
from jaxml.training import posthoc_ema as pe


def paper_sigma_rel(gamma):
    """Karras et al. 2024, Eq. 3: σ_rel = (γ+1)^½ (γ+2)^-1 (γ+3)^-½."""
    return (gamma + 1) ** 0.5 / (gamma + 2) / (gamma + 3) ** 0.5


def simulate_weights(gamma, num_steps, at_steps):
    """Weight of each step's params in the EMA, by running β_t = (1 - 1/t)^(γ+1) on one-hot
    params (params after update t = e_t): {step: (num_steps,) weights}."""
    ema, out = np.zeros(num_steps), {}
    for t in range(1, num_steps + 1):
        beta = (1.0 - 1.0 / t) ** (gamma + 1.0)
        ema *= beta
        ema[t - 1] += 1.0 - beta
        if t in at_steps:
            out[t] = ema.copy()
    return out


def test_sigma_rel_gamma_conversion_matches_paper():
    # EDM2 (Sec. 3.1): σ_rel 0.05 and 0.10 correspond to γ ≈ 16.97 and 6.94.
    np.testing.assert_allclose(pe.sigma_rel_to_gamma([0.05, 0.10]), [16.97, 6.94], atol=0.005)
    gammas = np.array([0.0, 0.5, 3.0, 6.94, 16.97, 100.0, 5000.0])
    np.testing.assert_allclose(pe.gamma_to_sigma_rel(gammas), paper_sigma_rel(gammas), rtol=1e-14)
    sigmas = paper_sigma_rel(gammas[1:])
    np.testing.assert_allclose(pe.sigma_rel_to_gamma(sigmas), gammas[1:], rtol=1e-10)
    assert pe.MAX_SIGMA_REL == pytest.approx(paper_sigma_rel(0.0))


T = 2000
SNAPSHOT_STEPS = list(range(100, T + 1, 100))
TRACKED = (0.05, 0.10)


@pytest.fixture(scope="module")
def simulated():
    """{(step, σ_rel): simulated per-step weights} for both tracked widths at every snapshot."""
    out = {}
    for sigma in TRACKED:
        gamma = float(pe.sigma_rel_to_gamma(sigma))
        for step, w in simulate_weights(gamma, T, set(SNAPSHOT_STEPS)).items():
            out[step, sigma] = w
    return out


def test_closed_form_profiles_match_simulation(simulated):
    inputs = [(t, s) for t in SNAPSHOT_STEPS for s in TRACKED]
    steps = np.array([t for t, _ in inputs], np.float64)
    gammas = pe.sigma_rel_to_gamma([s for _, s in inputs])
    # Per-step weights: exact (the discrete EMA integrates the continuous profile per step).
    for t, s in inputs[-4:]:
        w = pe.profile_step_weights(t, float(pe.sigma_rel_to_gamma(s)))
        np.testing.assert_allclose(w, simulated[t, s][:t], atol=1e-13)
    # Inner products: the continuous closed form vs sums over simulated steps; they differ by
    # the step discretisation only (largest for the narrowest, earliest profile: 5 steps wide).
    closed = pe.profile_inner_products(steps[:, None], gammas[:, None], steps, gammas)
    direct = np.array([[simulated[a] @ simulated[b] for b in inputs] for a in inputs])
    np.testing.assert_allclose(closed, direct, rtol=4e-3)


@pytest.mark.parametrize("target, tol", [(0.05, 1e-9), (0.10, 1e-9), (0.07, 6e-3), (0.15, 1e-2)])
def test_reconstructed_weights_match_target_profile(simulated, target, tol):
    inputs = [(t, s) for t in SNAPSHOT_STEPS for s in TRACKED]
    coefs = pe.solve_coefficients(
        [t for t, _ in inputs],
        pe.sigma_rel_to_gamma([s for _, s in inputs]),
        T,
        pe.sigma_rel_to_gamma([target]),
    )[:, 0]
    reconstructed = sum(c * simulated[key] for c, key in zip(coefs, inputs))
    gamma = float(pe.sigma_rel_to_gamma(target))
    wanted = simulate_weights(gamma, T, {T})[T]
    err = np.linalg.norm(reconstructed - wanted) / np.linalg.norm(wanted)
    assert err < tol, err


def _random_walk(num_steps, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "dense": {"kernel": np.cumsum(rng.normal(size=(num_steps, 3, 4)), 0).astype(np.float32)},
        "bias": np.cumsum(rng.normal(size=(num_steps, 5)), 0).astype(np.float32),
    }


def test_reconstruction_from_snapshots_of_a_random_walk(tmp_path):
    num_steps, every = 300, 10
    walk = _random_walk(num_steps)
    params_at = lambda t: jax.tree.map(lambda x: jnp.asarray(x[t - 1]), walk)  # after update t
    state = pe.init_power_ema(params_at(1), TRACKED)
    update = jax.jit(pe.update_power_ema)
    for t in range(1, num_steps + 1):
        state = update(state, params_at(t), jnp.int32(t))
        if t % every == 0:
            pe.save_snapshot(tmp_path, t, state)
    # Independent reference for the tracked EMAs: the closed-form weights, applied in NumPy.
    for i, sigma in enumerate(TRACKED):
        gamma = paper_gamma = pe.sigma_rel_to_gamma(sigma)
        assert paper_sigma_rel(paper_gamma) == pytest.approx(sigma)
        w = simulate_weights(float(gamma), num_steps, {num_steps})[num_steps]
        want = np.tensordot(w, walk["bias"], axes=1)
        np.testing.assert_allclose(state.averages[i]["bias"], want, rtol=1e-4, atol=1e-4)

    step, rec = pe.reconstruct(tmp_path, [*TRACKED, 0.07, 0.15])
    assert step == num_steps
    for i, sigma in enumerate(TRACKED):  # a tracked width comes back as itself
        for a, b in zip(jax.tree.leaves(rec[sigma]), jax.tree.leaves(state.averages[i])):
            np.testing.assert_allclose(a, np.asarray(b), rtol=1e-5, atol=1e-5)
    for sigma in (0.07, 0.15):  # an untracked one: close to its direct EMA, vs the walk's scale
        w = simulate_weights(float(pe.sigma_rel_to_gamma(sigma)), num_steps, {num_steps})
        want = np.tensordot(w[num_steps], walk["dense"]["kernel"], axes=1)
        err = np.abs(rec[sigma]["dense"]["kernel"] - want).max()
        assert err < 0.05 * np.abs(want - walk["dense"]["kernel"][-1]).max() + 0.05, err
    # An earlier step: only the snapshots up to it are used.
    step, rec = pe.reconstruct(tmp_path, [0.05], step=150)
    w = simulate_weights(float(pe.sigma_rel_to_gamma(0.05)), 150, {150})[150]
    np.testing.assert_allclose(rec[0.05]["bias"], w @ walk["bias"][:150], rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- the train spine


def _toy_config(total_steps, every=1):
    config = ml_collections.ConfigDict()
    config.total_steps = total_steps
    config.log_every = 1
    config.eval_every = 0
    config.checkpoint_every = 3
    config.checkpoints_to_keep = 5
    config.ema = ml_collections.ConfigDict()
    config.ema.posthoc_sigma_rels = TRACKED
    config.ema.posthoc_snapshot_every = every
    return config


def _toy_run(workdir, config):
    """A linear model trained by loop.run with the post-hoc EMA on (one CPU device)."""
    mesh = parallel.make_mesh({"data": 1}, devices=jax.devices()[:1])
    tx = optax.sgd(0.1)

    def loss_fn(params, model_state, batch, rng):
        # Gradient 1 everywhere: after update s the params are exactly 1 - 0.1 s (the data
        # term has no gradient), so the EMAs have a NumPy reference independent of the spine.
        fit = jnp.mean((batch["x"] @ jax.lax.stop_gradient(params["w"]) - batch["y"]) ** 2)
        return jnp.sum(params["w"]) + fit, (model_state, {})

    rng = np.random.default_rng(0)
    records = [
        {"x": rng.normal(size=3).astype(np.float32), "y": rng.normal(size=2).astype(np.float32)}
        for _ in range(64)
    ]
    state, shardings = training.create_train_state(
        lambda r: {"params": {"w": jnp.ones((3, 2))}},
        tx,
        jax.random.PRNGKey(0),
        mesh,
        posthoc_sigma_rels=pe.tracked_sigma_rels(config),
    )
    step = training.make_train_step(
        loss_fn, tx, state_shardings=shardings, batch_sharding=parallel.batch_sharding(mesh)
    )
    iterator = data.train_iterator(records, global_batch_size=4, seed=0)
    state, _ = loop.run(
        workdir=workdir,
        config=config,
        state=state,
        state_shardings=shardings,
        train_step=step,
        train_iterator=iterator,
        batch_sharding=parallel.batch_sharding(mesh),
    )
    return state


def _snapshots(workdir):
    return {s: pe.load_snapshot(p) for s, p in pe.list_snapshots(workdir / pe.SNAPSHOT_DIR)}


def test_train_loop_writes_snapshots_and_resumes(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    final = _toy_run(straight, _toy_config(5))
    _toy_run(resumed, _toy_config(3))  # stops at 3 (checkpointed), then the same run to 5
    assert sorted(_snapshots(resumed)) == [1, 2, 3]
    _toy_run(resumed, _toy_config(5))
    a, b = _snapshots(straight), _snapshots(resumed)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5]
    for s in a:
        assert a[s][:2] == b[s][:2] == (s, TRACKED)
        for fa, fb in zip(a[s][2], b[s][2]):
            np.testing.assert_array_equal(fa["w"], fb["w"])
    # The last snapshot holds the final state's EMAs; step 1's is the params after update 1.
    for i in range(2):
        np.testing.assert_array_equal(
            a[5][2][i]["w"], np.asarray(final.posthoc_ema.averages[i]["w"])
        )
    for s in a:  # independent reference: the closed-form params path, weights simulated
        path = 1.0 - 0.1 * np.arange(1, s + 1)
        for i, sigma in enumerate(TRACKED):
            w = simulate_weights(float(pe.sigma_rel_to_gamma(sigma)), s, {s})[s]
            np.testing.assert_allclose(a[s][2][i]["w"], np.full((3, 2), w @ path), rtol=1e-5)
    assert not np.allclose(a[5][2][0]["w"], a[5][2][1]["w"])
    # Without the config keys the state carries nothing extra and nothing is written.
    plain = training.create_train_state(
        lambda r: {"params": {"w": jnp.ones(3)}},
        optax.sgd(0.1),
        jax.random.PRNGKey(0),
        parallel.make_mesh({"data": 1}, devices=jax.devices()[:1]),
    )[0]
    assert plain.posthoc_ema is None


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("sigmas", [(0.05, 0.3), (0.0,), (-0.1,), ()])
def test_bad_widths_are_one_clear_error(sigmas):
    config = _toy_config(3)
    config.ema.posthoc_sigma_rels = sigmas
    with pytest.raises(pe.PosthocEMAError, match="posthoc_sigma_rels"):
        pe.tracked_sigma_rels(config)
    config.ema.posthoc_snapshot_every = 0  # off: not checked, nothing tracked
    assert pe.tracked_sigma_rels(config) == ()


def test_empty_snapshot_folder_is_one_clear_error(tmp_path):
    (tmp_path / pe.SNAPSHOT_DIR).mkdir()
    with pytest.raises(pe.PosthocEMAError, match="no EMA snapshots"):
        pe.reconstruct(tmp_path / pe.SNAPSHOT_DIR, [0.1])
    with pytest.raises(pe.PosthocEMAError, match="out of range"):
        pe.reconstruct(tmp_path / pe.SNAPSHOT_DIR, [0.29])


def test_cli_reports_missing_snapshots_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "train.posthoc_ema", f"--workdir={tmp_path}", "--sigma_rel=0.1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no EMA snapshots" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
