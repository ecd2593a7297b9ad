"""Faults in a 2-process job (jax.distributed over gloo, 2 CPU devices each).

- SIGTERM to one process: every process stops at the same step, saves, exits 0;
  the relaunch ends bitwise where an uninterrupted 2-process run ends.
- SIGKILL of one process: the other does not hang; the coordination service ends
  it within the heartbeat timeout with an error; the relaunch resumes from the
  last complete checkpoint and also ends bitwise equal.
"""

import signal
import time

import jax
import numpy as np
import pytest
import s5_runs

TOTAL = 48
HEARTBEAT_TIMEOUT = 10  # seconds (JAX's default is 100)


def start_job(workdir, data_dir):
    return s5_runs.start_processes(
        workdir,
        data_dir,
        f"--config.total_steps={TOTAL}",
        f"--heartbeat_timeout={HEARTBEAT_TIMEOUT}",
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    s5_runs.finish(start_job(workdir, data_dir))
    return s5_runs.load_state(workdir, TOTAL)


def assert_bitwise_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_sigterm_on_one_process_stops_all_at_one_step(tmp_path, data_dir, reference):
    procs = start_job(tmp_path, data_dir)
    s5_runs.wait_for_step(procs[0], tmp_path, 8)
    procs[1].send_signal(signal.SIGTERM)
    outputs = s5_runs.finish(procs)
    stopped = [
        int(line.split(" at step ")[1].split(";")[0])
        for out in outputs
        for line in out.splitlines()
        if "stopped by" in line
    ]
    assert len(stopped) == 2 and stopped[0] == stopped[1], stopped  # one agreed step
    assert 8 <= stopped[0] < TOTAL and s5_runs.saved_steps(tmp_path)[-1] == stopped[0]

    outputs = s5_runs.finish(start_job(tmp_path, data_dir))
    assert f"at step {stopped[0]}" in outputs[0]  # "resumed from ... at step S"
    assert_bitwise_equal(s5_runs.load_state(tmp_path, TOTAL), reference)


@pytest.mark.slow
def test_sigkill_of_one_process_ends_the_other_with_an_error(tmp_path, data_dir, reference):
    procs = start_job(tmp_path, data_dir)
    s5_runs.wait_for_step(procs[0], tmp_path, 8)
    procs[1].kill()
    killed_at = time.time()
    out = procs[0].communicate(timeout=10 * HEARTBEAT_TIMEOUT)[0]
    waited = time.time() - killed_at
    procs[1].communicate()
    assert procs[0].returncode != 0
    assert "heartbeat" in out.lower() or "unhealthy" in out.lower(), out[-3000:]
    last = s5_runs.saved_steps(tmp_path)[-1]
    assert last < TOTAL, "the job finished before the kill; nothing was tested"
    print(f"survivor ended {waited:.1f}s after the kill; last complete checkpoint {last}")

    outputs = s5_runs.finish(start_job(tmp_path, data_dir))
    assert f"at step {last}" in outputs[0]
    assert_bitwise_equal(s5_runs.load_state(tmp_path, TOTAL), reference)
