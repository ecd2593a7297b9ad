"""Run `python -m train.s5` on a tiny config in subprocesses and read its checkpoints."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

TINY = [
    "--config.total_steps=24",
    "--config.log_every=4",
    "--config.eval_every=12",
    "--config.checkpoint_every=4",
    "--config.checkpoints_to_keep=10",
    "--config.data.batch_size=16",
    "--config.data.eval_batch_size=200",
    "--config.model.d_model=16",
    "--config.model.state_size=16",
    "--config.model.blocks=2",
    "--config.model.n_layers=2",
    "--config.optimizer.warmup_epochs=0.02",
]


def env(devices: int = 1) -> dict:
    e = dict(os.environ)
    e.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        PYTHONPATH=str(REPO),
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    return e


def command(workdir, data_dir, *extra) -> list[str]:
    return [
        sys.executable,
        "-m",
        "train.s5",
        f"--workdir={workdir}",
        f"--config.data.data_dir={data_dir}",
        *TINY,
        *extra,
    ]


def run(workdir, data_dir, *extra, devices=1, check=True, timeout=600):
    proc = subprocess.run(
        command(workdir, data_dir, *extra),
        env=env(devices),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"train.s5 failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def start(workdir, data_dir, *extra, devices=1, **popen_kwargs):
    return subprocess.Popen(
        command(workdir, data_dir, *extra),
        env=env(devices),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen_kwargs,
    )


def start_processes(workdir, data_dir, *extra, processes=2, devices=2):
    """Start `processes` cooperating train.s5 processes (jax.distributed on a free local port)."""
    port = free_port()
    distributed = [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={processes}"]
    return [
        start(workdir, data_dir, *extra, *distributed, f"--process_id={i}", devices=devices)
        for i in range(processes)
    ]


def finish(procs, timeout=600) -> list[str]:
    """Wait for every process and check that each exited 0; their outputs."""
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    for i, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"process {i} exited {p.returncode}:\n{out[-4000:]}"
    return outputs


def saved_steps(workdir) -> list[int]:
    ckpt = Path(workdir) / "checkpoints"
    if not ckpt.is_dir():
        return []
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())


def wait_for_step(proc, workdir, step, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if step in saved_steps(workdir):
            return
        if proc.poll() is not None:
            raise AssertionError(
                f"process ended before checkpoint {step}:\n{proc.stdout.read()[-3000:]}"
            )
        time.sleep(0.005)
    raise AssertionError(f"no checkpoint {step} within {timeout}s")


def load_state(workdir, step) -> dict:
    """The saved train state as a dict of numpy arrays (read with orbax, no model code)."""
    import jax
    import orbax.checkpoint as ocp

    path = Path(workdir).absolute() / "checkpoints" / str(step) / "state"
    checkpointer = ocp.PyTreeCheckpointer()
    metadata = checkpointer.metadata(path).item_metadata.tree
    # As host numpy arrays: the saved device layout may span processes that no longer exist.
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
    return checkpointer.restore(path, restore_args=as_numpy)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_hash(root) -> dict:
    """{relative path: (size, bytes)} of every file under root, to prove nothing changed."""
    root = Path(root)
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }
