"""Elastic restore: a checkpoint written on one mesh resumes on another.

In-process (8 virtual devices): an FSDP-sharded state saved from a
(data 2, fsdp 4) mesh restores bitwise onto 1 device and onto (fsdp 2), in the
target's shardings, with the data iterator at the saved position.
End to end: `train.s5` saved by 1 process x 8 devices (fsdp 4) resumes on
1 device and on 2 processes x 2 devices and ends where the uninterrupted run ends.
"""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import s5_runs
from jax.sharding import PartitionSpec as P

from jaxml import data, parallel, training
from jaxml.training.checkpoint import Checkpointer

SOURCE = [{"x": np.full((3,), i, np.float32)} for i in range(64)]


def _init_fn(rng):
    k1, k2 = jax.random.split(rng)
    return {"params": {"w": jax.random.normal(k1, (64, 32)), "b": jax.random.normal(k2, (8,))}}


def _state(mesh, seed, abstract_only=False):
    return training.create_train_state(
        _init_fn,
        optax.adam(1e-3),
        jax.random.PRNGKey(seed),
        mesh,
        use_ema=True,
        fsdp_min_size=256,
        abstract_only=abstract_only,
    )


def _iterator():
    return data.train_iterator(
        SOURCE, global_batch_size=8, seed=3, process_index=0, process_count=1
    )


@pytest.mark.parametrize("target", ["1 device", "fsdp 2"])
def test_fsdp_checkpoint_restores_bitwise_on_another_mesh(tmp_path, target):
    mesh = parallel.make_mesh({"data": 2, "fsdp": 4})
    state, _ = _state(mesh, seed=0)
    state = state.replace(params=jax.tree.map(lambda x: x + 1.0, state.params))  # not the init
    assert state.params["w"].sharding.spec == P("fsdp", None)  # really sharded
    assert state.opt_state[0].mu["w"].sharding.spec == P("fsdp", None)
    iterator = _iterator()
    for _ in range(5):
        next(iterator)
    expected_next = next(_advanced(6))["x"]
    saver = Checkpointer(tmp_path, save_every=1, async_save=False)
    saver.save(5, state, iterator, {"note": "saved on 8 devices"})
    saver.close()

    devices = jax.devices()[:1] if target == "1 device" else jax.devices()[:2]
    new_mesh = parallel.make_mesh({"fsdp": len(devices)}, devices=devices)
    abstract, shardings = _state(new_mesh, seed=1, abstract_only=True)
    restored, restored_iterator = Checkpointer(tmp_path, save_every=1).restore(
        5, abstract, _iterator()
    )
    host = jax.device_get(state)
    for x, y in zip(jax.tree.leaves(jax.device_get(restored)), jax.tree.leaves(host), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for leaf, s in zip(jax.tree.leaves(restored), jax.tree.leaves(shardings), strict=True):
        assert leaf.sharding == s
    np.testing.assert_array_equal(next(restored_iterator)["x"], expected_next)


def _advanced(n):
    """A fresh iterator after n-1 batches: its next batch is batch n-1 (0-based)."""
    iterator = _iterator()
    for _ in range(n - 1):
        next(iterator)
    return iterator


FSDP = ["--config.mesh.fsdp=4", "--config.fsdp_min_size=64", "--config.total_steps=16"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def on_8_devices(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("fsdp8")
    s5_runs.run(workdir, data_dir, *FSDP, devices=8)
    return workdir


def _resume_copy(source, dest, step):
    shutil.copytree(source, dest)
    for saved in s5_runs.saved_steps(dest):
        if saved > step:
            shutil.rmtree(dest / "checkpoints" / str(saved))


def _assert_close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_fsdp_run_resumes_on_one_device(tmp_path, data_dir, on_8_devices):
    _resume_copy(on_8_devices, tmp_path / "w", 8)
    proc = s5_runs.run(
        tmp_path / "w", data_dir, "--config.mesh.fsdp=1", "--config.total_steps=16", devices=1
    )
    assert "resumed from" in proc.stderr and "at step 8" in proc.stderr
    _assert_close(
        s5_runs.load_state(tmp_path / "w", 16)["params"],
        s5_runs.load_state(on_8_devices, 16)["params"],
    )


def test_fsdp_run_resumes_on_two_processes(tmp_path, data_dir, on_8_devices):
    workdir = tmp_path / "w"
    _resume_copy(on_8_devices, workdir, 8)
    procs = s5_runs.start_processes(
        workdir,
        data_dir,
        "--config.mesh.fsdp=2",
        "--config.fsdp_min_size=64",
        "--config.total_steps=16",
    )
    outputs = s5_runs.finish(procs)
    # The data position came from the 1-process checkpoint's file.
    assert "data position of step 8 taken from process_0-of-1.json" in outputs[0]
    resumed = s5_runs.load_state(workdir, 16)
    _assert_close(resumed["params"], s5_runs.load_state(on_8_devices, 16)["params"])
    # Training moved on after the restore (the comparison is not of two copies of step 8).
    step8 = s5_runs.load_state(on_8_devices, 8)["params"]
    pairs = zip(jax.tree.leaves(resumed["params"]), jax.tree.leaves(step8))
    assert any(not np.allclose(x, y) for x, y in pairs)


def test_adam_moments_of_a_sharded_param_are_sharded_alike():
    mesh = parallel.make_mesh({"data": 2, "fsdp": 4})
    state, shardings = _state(mesh, seed=0)
    assert shardings.params["w"] == shardings.opt_state[0].nu["w"] == shardings.ema_params["w"]
    assert jnp.shape(state.params["b"]) == (8,) and shardings.params["b"].spec == P()
