"""Multi-host on one machine: train.diffusion and train.s5 run as 2 or 4 processes
(jax.distributed over gloo, each process feeding only its own shard of the input) end with the
same parameters as a 1-process run of the same global batch."""

import subprocess
import sys

import jax
import numpy as np
import pytest
import s5_runs
import test_train_diffusion

TOTAL = 6


def _command(module, workdir, data_dir, *extra):
    tiny = s5_runs.TINY if module == "train.s5" else test_train_diffusion.TINY
    return [
        sys.executable,
        "-m",
        module,
        f"--workdir={workdir}",
        f"--config.data.data_dir={data_dir}",
        *tiny,
        f"--config.total_steps={TOTAL}",
        "--config.checkpoint_every=3",
        *extra,
    ]


def _train(module, workdir, data_dir, processes, devices_per_process, *flags):
    """Run `module` as `processes` cooperating processes; return process 0's output."""
    port = s5_runs.free_port()
    extra = list(flags) + (
        []
        if processes == 1
        else [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={processes}"]
    )
    procs = [
        subprocess.Popen(
            _command(
                module,
                workdir,
                data_dir,
                *extra,
                *([f"--process_id={i}"] if processes > 1 else []),
            ),
            env=s5_runs.env(devices_per_process),
            cwd=s5_runs.REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(processes)
    ]
    try:
        outputs = [p.communicate(timeout=900)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for i, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"process {i} exited {p.returncode}:\n{out[-4000:]}"
    return outputs[0]


def _assert_same_training(single, multi):
    # orbax may also save the first step of a fresh run; the periodic ones must be there.
    assert {3, TOTAL} <= set(s5_runs.saved_steps(multi)) & set(s5_runs.saved_steps(single))
    a, b = s5_runs.load_state(single, TOTAL), s5_runs.load_state(multi, TOTAL)
    assert int(b["step"]) == TOTAL
    leaves_a, leaves_b = jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"])
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    # Not trivially equal: the parameters moved between the two checkpoints.
    c = s5_runs.load_state(single, 3)
    assert any(not np.allclose(x, y) for x, y in zip(leaves_a, jax.tree.leaves(c["params"])))


def _compare(tmp_path, module, processes, devices_per_process, *extra):
    data_dir = tmp_path / "tfds"
    single, multi = tmp_path / "single", tmp_path / "multi"
    _train(module, single, data_dir, 1, 1, *extra)
    out = _train(module, multi, data_dir, processes, devices_per_process, *extra)
    assert f"over {processes} processes" in out
    assert f"'data': {processes * devices_per_process}" in out
    _assert_same_training(single, multi)


@pytest.mark.slow  # ~3.5 min on 2 cores (three U-Net compiles); CI runs it after the default suite
def test_diffusion_two_processes_match_one(tmp_path):
    # Sampling is left to the 4-process test (slow); training and checkpoints are compared here.
    _compare(tmp_path, "train.diffusion", 2, 2, "--config.eval_every=0")


@pytest.mark.slow
@pytest.mark.parametrize("module", ["train.s5", "train.diffusion"])
def test_four_processes_match_one(tmp_path, module):
    _compare(tmp_path, module, processes=4, devices_per_process=1)
