"""train.diffusion runs end to end on a tiny U-Net; train.sample gives the same images on 1 and 8
devices (the batch sharded over the mesh)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import s5_runs

TINY = [
    "--config.total_steps=6",
    "--config.log_every=3",
    "--config.eval_every=6",
    "--config.checkpoint_every=3",
    "--config.data.batch_size=16",
    "--config.eval.num_samples=16",
    "--config.model.model_channels=8",
    "--config.model.num_blocks=1",
    "--config.model.attn_resolutions=()",
    "--config.optimizer.warmup_steps=2",
    "--config.sampler.num_steps=4",
    "--config.sampler.restart_intervals=((2, 1, 0.06, 0.3),)",
]


def _run(module, *args, devices=1):
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        env=s5_runs.env(devices),
        cwd=s5_runs.REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("diffusion")
    workdir, data_dir = tmp / "run", tmp / "tfds"
    _run("train.diffusion", f"--workdir={workdir}", f"--config.data.data_dir={data_dir}", *TINY)
    return workdir, data_dir


def test_training_writes_samples_metrics_and_checkpoints(trained):
    workdir, _ = trained
    final = json.loads((workdir / "final_metrics.json").read_text())
    assert final["step"] == 6 and final["nfe"] == 2 * 4 - 1 + 1 * 2 * (2 - 1)  # Restart NFE formula
    assert final["fd_digits"] > 0
    assert (workdir / "samples" / "step_0000006.png").exists()
    assert s5_runs.saved_steps(workdir)[-1] == 6


def test_sample_entrypoint_same_images_on_1_and_8_devices(trained):
    workdir, _ = trained
    outs = []
    for devices in (1, 8):
        out = workdir / f"sample_{devices}"
        _run(
            "train.sample",
            f"--workdir={workdir}",
            "--num_samples=16",
            f"--out={out}",
            "--sampler=restart",
            devices=devices,
        )
        outs.append(np.load(out / "samples.npz")["images"])
        assert (out / "samples.png").exists()
    assert outs[0].shape == (16, 8, 8, 1)
    np.testing.assert_allclose(outs[0], outs[1], atol=2e-5)
    assert outs[0].std() > 0.05  # real, varied images, not a constant
