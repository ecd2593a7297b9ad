"""A damaged newest checkpoint step is skipped with a warning: resume from the previous one."""

import shutil

import jax
import numpy as np
import pytest
import s5_runs


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("good")
    s5_runs.run(workdir, data_dir, "--config.total_steps=8")
    assert s5_runs.saved_steps(workdir)[-2:] == [4, 8]
    return workdir


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_damaged_latest_step_falls_back_to_previous(trained, data_dir, tmp_path, damage):
    workdir = tmp_path / "w"
    shutil.copytree(trained, workdir)
    step_dir = workdir / "checkpoints" / "8"
    # The array data files of the state (orbax's ocdbt data under state/**/d/).
    data_files = [f for f in step_dir.glob("state/**/d/*") if f.is_file()]
    assert data_files
    for f in data_files:
        _truncate(f) if damage == "truncated" else f.unlink()
    damaged_bytes = s5_runs.tree_hash(step_dir)

    proc = s5_runs.run(workdir, data_dir, "--config.total_steps=8")
    assert "could not be restored" in proc.stderr and "resumed from step 4" in proc.stderr
    # Set aside, byte for byte, not deleted; and step 8 trained again from step 4.
    (moved,) = (workdir / "checkpoints_damaged").iterdir()
    assert moved.name.startswith("8-") and s5_runs.tree_hash(moved) == damaged_bytes
    assert s5_runs.saved_steps(workdir)[-1] == 8
    again, original = s5_runs.load_state(workdir, 8), s5_runs.load_state(trained, 8)
    for x, y in zip(jax.tree.leaves(again), jax.tree.leaves(original)):
        np.testing.assert_array_equal(x, y)
