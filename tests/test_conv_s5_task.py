"""The video task end to end, in process, on a small moving_digits: train + eval + strips,
exact resume, 1 device vs 8 devices, and config errors before any work."""

import json

import jax
import numpy as np
import pytest
import s5_runs  # load_state: a saved train state read by orbax alone
from etils import epath
from jax.sharding import Mesh

from jaxml import parallel, tasks
from jaxml.data.builders import moving_digits
from jaxml.tasks import video
from jaxml.training.cli import ConfigError
from train.configs import conv_s5_moving_digits


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A small moving_digits (16 train videos of 8 frames, 8 test videos of 20 frames)."""
    path = tmp_path_factory.mktemp("tfds")
    saved = dict(moving_digits.SPLITS)
    moving_digits.SPLITS.update({"train": (16, 8), "test": (8, 20)})
    try:
        from jaxml import data

        data.data_source("moving_digits", "train", str(path))
    finally:
        moving_digits.SPLITS.update(saved)
    return str(path)


def small_config(data_dir, variant="convs5", **overrides):
    config = conv_s5_moving_digits.get_config(variant)
    config.data.data_dir = data_dir
    config.data.train_frames = 6
    config.data.batch_size = 8
    config.data.eval_batch_size = 8
    config.model.d_model = 8
    config.model.n_layers = 1
    config.model.downsample = 2
    if variant == "convs5":
        config.model.state_size = 8
    config.optimizer.warmup_steps = 1
    config.eval.context_frames = 4
    config.eval.horizon = 12
    config.eval.bands = (2, 12)
    config.eval.num_videos = 8
    config.eval.strip_videos = 2
    config.eval.strip_stride = 3
    config.total_steps = 2
    config.log_every = 1
    config.eval_every = 2
    config.checkpoint_every = 2
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def run(config, workdir, mesh_data=-1):
    config.mesh.data = mesh_data
    mesh = parallel.make_mesh(config.mesh)
    task = video.build(config, mesh, workdir=epath.Path(workdir))
    return task, tasks.train(task, config, epath.Path(workdir))


def test_train_eval_and_strips(tmp_path, data_dir):
    _, final = run(small_config(data_dir, total_steps=2), tmp_path / "full")
    for key in ("mse", "psnr", "ssim", "ssim_1-2", "ssim_3-12", "mse_3-12"):
        assert np.isfinite(final[key]), key
    assert 0 < final["mse"] < 0.5 and -1 <= final["ssim"] <= 1
    saved = json.loads((tmp_path / "full" / "final_metrics.json").read_text())
    assert saved["step"] == 2
    strips = sorted(p.name for p in (tmp_path / "full" / "strips").iterdir())
    assert strips == ["step_0000002.png"]
    from PIL import Image

    image = np.asarray(Image.open(tmp_path / "full" / "strips" / strips[0]))
    # 2 videos x (truth, prediction) rows of 12 // 3 = 4 frames of 32 px, 1 px gaps, 2x scale.
    assert image.shape == (2 * (4 * 33 + 1), 2 * (4 * 33 + 1))


@pytest.mark.slow
def test_resume_is_exact(tmp_path, data_dir):
    """Stop at step 2, then the same command with total_steps=4 resumes to the same numbers."""
    run(small_config(data_dir, total_steps=4, eval_every=0), tmp_path / "full")
    run(small_config(data_dir, total_steps=2, eval_every=0), tmp_path / "resumed")
    run(small_config(data_dir, total_steps=4, eval_every=0), tmp_path / "resumed")
    rows = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows if "train/loss" in r] == [1, 2, 3, 4]
    full = s5_runs.load_state(tmp_path / "full", 4)
    resumed = s5_runs.load_state(tmp_path / "resumed", 4)
    leaves_full, leaves_resumed = jax.tree.leaves(full), jax.tree.leaves(resumed)
    assert len(leaves_full) == len(leaves_resumed) > 0
    for a, b in zip(leaves_full, leaves_resumed):
        np.testing.assert_array_equal(a, b)


# Both slow (~3 min each on a loaded 2-core CPU); the 1-vs-8-device equality of the S5 and
# diffusion tasks stays in the default suite.
@pytest.mark.slow
@pytest.mark.parametrize("variant", ["convs5", "convlstm"])
def test_one_device_equals_eight_devices(data_dir, variant):
    """One train step on the same global batch: same loss and parameters on 1 and 8 devices."""
    results = []
    for devices in (1, 8):
        config = small_config(data_dir, variant)
        grid = np.array(jax.devices()[:devices]).reshape(devices, 1)
        task = video.build(config, Mesh(grid, parallel.MESH_AXES))
        batch = parallel.global_batch(next(task.train_iterator), task.batch_sharding)
        state, metrics = task.train_step(task.state, batch)
        results.append((float(metrics["loss"]), jax.device_get(state.params)))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for a, b in zip(jax.tree.leaves(results[0][1]), jax.tree.leaves(results[1][1])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"eval.horizon": 30}, "exceeds the 20 frames of the 'moving_digits' test videos"),
        ({"data.train_frames": 9}, "exceeds the 8 frames"),
        ({"data.batch_size": 6}, "data.batch_size=6 must be a positive multiple"),
        ({"eval.bands": (5, 3)}, "config.eval.bands must be increasing"),
        ({"model.name": "transformer"}, "config.model.name must be one of"),
        ({"model.scan_impl": "fast"}, "Unknown scan_impl"),
        ({"evals": ("video_prediction", "fvd")}, "unknown evaluator"),
    ],
)
def test_config_errors_name_the_problem(data_dir, overrides, message):
    config = small_config(data_dir, **overrides)
    with pytest.raises(ConfigError, match=message):
        video.build(config, parallel.make_mesh(config.mesh))
