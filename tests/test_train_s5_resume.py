"""Exact resume: SIGKILL or SIGTERM mid-run, relaunch, bitwise the same as an uninterrupted run."""

import json
import signal

import jax
import numpy as np
import pytest
import s5_runs


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("full")
    s5_runs.run(workdir, data_dir)
    return workdir


def assert_bitwise_equal(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(x, y)


def test_uninterrupted_run_writes_metrics_and_checkpoints(uninterrupted):
    assert s5_runs.saved_steps(uninterrupted)[-1] == 24
    rows = [json.loads(line) for line in (uninterrupted / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [4, 8, 12, 16, 20, 24]
    assert any("eval/test_accuracy" in r for r in rows)
    assert list((uninterrupted / "tensorboard").iterdir())
    final = json.loads((uninterrupted / "final_metrics.json").read_text())
    assert final["last"]["step"] == 24 and 0.0 <= final["last"]["test_accuracy"] <= 1.0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_interrupted_run_resumes_bitwise(tmp_path, data_dir, uninterrupted, sig):
    proc = s5_runs.start(tmp_path, data_dir)
    s5_runs.wait_for_step(proc, tmp_path, 8)
    proc.send_signal(signal.SIGSTOP if sig == signal.SIGKILL else sig)
    if sig == signal.SIGKILL:
        proc.kill()
    out = proc.communicate(timeout=120)[0]
    if sig == signal.SIGTERM:
        assert proc.returncode == 0, out[-3000:]
        assert "stopped by SIGTERM" in out
    steps = s5_runs.saved_steps(tmp_path)
    assert 8 in steps and 24 not in steps, steps  # it really stopped mid-run
    resumed = s5_runs.run(tmp_path, data_dir)
    assert "resumed from" in resumed.stderr
    assert_bitwise_equal(s5_runs.load_state(tmp_path, 24), s5_runs.load_state(uninterrupted, 24))
