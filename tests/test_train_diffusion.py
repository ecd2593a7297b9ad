"""train.diffusion runs end to end (the MLP variant, trained long enough to make digit-like
samples); train.sample gives the same images on 1 and 8 devices, in micro-batches."""

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import s5_runs

from jaxml.diffusion import metrics, recipe

# A tiny U-Net run (tests/test_multihost_train.py trains it as 1, 2 and 4 processes).
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
# The MLP variant, trained long enough (seconds) to make digit-like samples.
MLP_RUN = [
    "--config=train/configs/diffusion_digits.py:mlp",
    "--config.total_steps=300",
    "--config.log_every=100",
    "--config.eval_every=300",
    "--config.checkpoint_every=150",
    "--config.data.batch_size=64",
    "--config.eval.num_samples=64",
    "--config.eval.batch_size=32",
    "--config.optimizer.warmup_steps=20",
    "--config.sampler.num_steps=8",
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
    _run("train.diffusion", f"--workdir={workdir}", *MLP_RUN, f"--config.data.data_dir={data_dir}")
    return workdir, data_dir


def _unclamped_fd(images, data_dir) -> float:
    """FD-digits without the clamp at 0 (scipy's matrix square root, not ours)."""
    import scipy.linalg

    features = np.asarray(metrics.digits_feature_extractor(data_dir=data_dir)(images), np.float64)
    mu, sigma = features.mean(0), np.cov(features, rowvar=False)
    mu_ref, sigma_ref = metrics.digits_statistics("train", data_dir=data_dir)
    with warnings.catch_warnings():  # N = 64 samples of 64 features: a singular covariance
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma @ sigma_ref).real
    return float(((mu - mu_ref) ** 2).sum() + np.trace(sigma + sigma_ref - 2 * covmean))


def test_training_writes_samples_metrics_and_checkpoints(trained):
    workdir, data_dir = trained
    final = json.loads((workdir / "final_metrics.json").read_text())
    assert final["step"] == 300 and final["nfe"] == 2 * 8 - 1 + 1 * 2 * (2 - 1)  # Restart NFE
    assert (workdir / "samples" / "step_0000300.png").exists()
    assert s5_runs.saved_steps(workdir)[-1] == 300
    # Bounded by independent references at the same N = 64: real test digits below, clipped
    # Gaussian noise above (FD-digits of noise / real / this run at N = 64: 582 / 24 / 43 with
    # the 64-d v1 features; 306 / 26 / not measured with the 512-d v2 features on main).
    rng = np.random.default_rng(0)
    noise = np.clip(rng.standard_normal((64, 8, 8, 1)), -1, 1).astype(np.float32)
    from jaxml.data import data_source

    test = data_source("digits", "test", data_dir)
    real = np.stack([test[i]["image"] for i in range(64)])  # uint8
    fd_noise, fd_real = _unclamped_fd(noise, data_dir), _unclamped_fd(real, data_dir)
    assert fd_real < final["fd_digits"] < 0.35 * fd_noise, (fd_real, final["fd_digits"], fd_noise)
    # The eval reports the full digits evaluation: its floor at N = 64 is what 64 real
    # digits score (one draw of them, by scipy above: within a factor 2 of the fitted floor).
    assert 0.5 * fd_real < final["fd_digits_floor"] < 2 * fd_real, (final, fd_real)
    assert final["fd_digits_floor"] < final["fd_digits"]
    assert 0 <= final["precision"] <= 1 and 0 <= final["recall"] <= 1
    assert np.isfinite(final["kid_digits"]) and final["kid_digits_se"] > 0
    # The reported metric (clamped at 0) agrees with the unclamped one where both apply.
    np.testing.assert_allclose(metrics.fd_digits(noise, data_dir=data_dir), fd_noise, rtol=1e-3)


def test_sample_entrypoint_same_images_on_1_and_8_devices(trained):
    workdir, _ = trained
    outs = []
    for devices in (1, 8):
        out = workdir / f"sample_{devices}"
        _run(
            "train.sample",
            f"--workdir={workdir}",
            "--num_samples=20",  # not a multiple of the micro-batch: the last one is trimmed
            f"--out={out}",
            "--sampler=restart",
            "--config.eval.batch_size",  # the space form of an override
            "8",
            devices=devices,
        )
        outs.append(recipe.read_shards(out)["images"])
        assert (out / "samples.png").exists()
        assert len(list(out.glob("samples_*.npz"))) == 3  # 8 + 8 + 4
        info = json.loads((out / "info.json").read_text())
        assert info["num_samples"] == 20 and info["nfe"] == 17
        assert info["digits_evaluation"]["num_samples"] == 20
        assert info["fd_digits"] == info["digits_evaluation"]["fd_train"]
    assert outs[0].shape == (20, 8, 8, 1)
    np.testing.assert_allclose(outs[0], outs[1], atol=2e-5)
    assert outs[0].std() > 0.05  # real, varied images, not a constant
