"""Bad input: one clear message, non-zero exit, and a good checkpoint is never touched."""

import pytest
import s5_runs


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("good")
    s5_runs.run(workdir, data_dir, "--config.total_steps=8")
    return workdir


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--config.no_such_key=1"], "no_such_key"),
        (["--config.mesh.data=3"], "needs 3 devices"),
        (
            ["--config.data.name=cifar10"],
            "prepare it once with: python -m jaxml.data.prepare --dataset=cifar10",
        ),
        (["--config.data.batch_size=0"], "batch_size"),
        (["--config.model.activation=relu"], "config.model.activation='relu' must be one of"),
        (["--config.optimizer.opt_config=fast"], "config.optimizer.opt_config"),
    ],
)
def test_bad_input_is_one_clear_error_and_leaves_checkpoints_alone(
    trained, data_dir, extra, message
):
    before = s5_runs.tree_hash(trained / "checkpoints")
    proc = s5_runs.run(trained, data_dir, "--config.total_steps=12", *extra, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert s5_runs.tree_hash(trained / "checkpoints") == before


def test_checkpoint_path_that_is_a_file(tmp_path, data_dir):
    (tmp_path / "checkpoints").write_text("precious")
    proc = s5_runs.run(tmp_path, data_dir, check=False)
    assert proc.returncode == 2
    assert "not a directory" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "checkpoints").read_text() == "precious"


def test_damaged_checkpoints_are_reported_not_overwritten(trained, data_dir, tmp_path):
    import shutil

    workdir = tmp_path / "damaged"
    shutil.copytree(trained, workdir)
    # Every step damaged: nothing to fall back to (one damaged step: test_checkpoint_recovery).
    for f in (workdir / "checkpoints").glob("*/state/**/*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"\x00garbage")
    before = s5_runs.tree_hash(workdir / "checkpoints")
    proc = s5_runs.run(workdir, data_dir, "--config.total_steps=12", check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "cannot restore step 8" in proc.stderr and "Traceback" not in proc.stderr
    assert s5_runs.tree_hash(workdir / "checkpoints") == before
