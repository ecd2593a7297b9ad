"""Every bad diffusion config field is one ConfigError line naming the key, before any work;
train.sample's checkpoint and flag handling (jaxml.tasks.diffusion[_sampling])."""

import subprocess
import sys

import numpy as np
import pytest
import s5_runs

from jaxml.diffusion import recipe
from jaxml.tasks import diffusion, diffusion_sampling
from jaxml.training import cli
from jaxml.training.checkpoint import CheckpointError
from train.configs import diffusion_digits


def _set(config, key, value):
    *parents, leaf = key.split(".")
    target = config
    for p in parents:
        target = target[p]
    with target.unlocked():
        target[leaf] = value


BAD = [  # (key, value, text the message must contain)
    ("sampler.name", "bogus", "config.sampler.name"),
    ("sampler.restart_intervals", ((3, 2, 0.3, 0.06),), "restart_intervals[0]"),
    ("sampler.restart_intervals", ((1, 2, 0.06, 0.3),), "restart_intervals[0]"),
    ("sampler.num_steps", 0, "config.sampler.num_steps"),
    ("sampler.guidance", 2.0, "config.sampler.guidance"),  # unconditional model
    ("sampler.guidance", -1.0, "config.sampler.guidance"),
    ("model.name", "transformer", "config.model.name"),
    ("model.num_classes", -1, "config.model.num_classes"),
    ("model.label_dropout", 1.5, "config.model.label_dropout"),
    ("model.label_dropout", 0.1, "config.model.label_dropout"),  # needs num_classes > 0
    ("model.model_channels", 0, "config.model"),
    ("model.hidden", 64, "config.model"),  # a field the U-Net does not have
    ("model.dtype", "float77", "config.model.dtype"),
    ("eval.num_samples", 0, "config.eval.num_samples"),
    ("eval.batch_size", 12, "config.eval.batch_size"),  # 8 devices
    ("eval.grid_size", -1, "config.eval.grid_size"),
    ("evals", ("samples_grid", "fd_digit"), "config.evals"),
    ("diffusion.D", -3, "config.diffusion.D"),
    ("diffusion.precond", "ddpm", "config.diffusion.precond"),
    ("data.preprocess", "nope", "config.data.preprocess"),
    ("data.batch_size", 12, "config.data.batch_size"),
    ("ema.halflife_kimg", -1.0, "config.ema.halflife_kimg"),
    ("augment", {"p": 1.5}, "config.augment.p"),
    ("optimizer.decay", "linear", "config.optimizer.decay"),
    ("optimizer.decay_ref_steps", 0, "config.optimizer.decay_ref_steps"),
]


@pytest.mark.parametrize("decay", ["constant", "cosine", "rsqrt"])
def test_learning_rate_schedule_closed_form(decay):
    config = diffusion_digits.get_config()
    config.optimizer.decay = decay
    lr, warmup, total, ref = 2e-3, 200, 2000, 500
    schedule = recipe.learning_rate_schedule(config)
    steps = np.array([0, 1, 100, 199, 200, 201, 499, 500, 700, 1000, 1999, 2000])
    got = np.array([float(schedule(t)) for t in steps])
    # Independent float64 formulas: EDM's linear warm-up, then the decay after it.
    after = {
        "constant": lambda t: lr,
        "cosine": lambda t: lr * 0.5 * (1 + np.cos(np.pi * (t - warmup) / (total - warmup))),
        "rsqrt": lambda t: lr / np.sqrt(max(t / ref, 1.0)),
    }[decay]
    expected = [lr * t / warmup if t < warmup else after(t) for t in steps]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("key,value,text", BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_each_bad_field_is_one_line_naming_the_key(key, value, text):
    config = diffusion_digits.get_config()
    diffusion.validate(config)  # the default is fine
    _set(config, key, value)
    with pytest.raises(cli.ConfigError) as e:
        diffusion.validate(config)
    message = str(e.value)
    assert text in message and "\n" not in message, message


def test_conditional_variant_is_valid_and_guidance_allowed():
    config = diffusion_digits.get_config("cond")
    assert config.model.num_classes == 10 and config.model.label_dropout > 0
    _set(config, "sampler.guidance", 2.0)
    diffusion.validate(config)
    diffusion.validate(diffusion_digits.get_config("mlp"))


def test_bad_config_exits_2_with_one_line_before_training(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "train.diffusion",
            f"--workdir={tmp_path / 'run'}",
            "--config.sampler.restart_intervals=((3, 2, 0.3, 0.06),)",
        ],
        env=s5_runs.env(1),
        cwd=s5_runs.REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "restart_intervals[0]" in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "run").exists()  # nothing written: no data, no checkpoint


# ---- train.sample --------------------------------------------------------------------


def test_mistyped_workdir_creates_nothing(tmp_path):
    typo = tmp_path / "rnus" / "digits"
    with pytest.raises(CheckpointError, match="no .*rnus.*--workdir"):
        diffusion_sampling.open_checkpoint(typo, None)
    assert not (tmp_path / "rnus").exists()
    with pytest.raises(CheckpointError, match="no checkpoints/ folder in"):
        diffusion_sampling.open_checkpoint(tmp_path, None)
    assert not (tmp_path / "checkpoints").exists()


def test_missing_step_is_named(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(CheckpointError) as e:
        diffusion_sampling.open_checkpoint(tmp_path, None)
    assert str(e.value) == f"no checkpoint in {tmp_path / 'checkpoints'}"
    with pytest.raises(CheckpointError, match=r"no checkpoint of step 5 in .* \(have \[\]\)"):
        diffusion_sampling.open_checkpoint(tmp_path, 5)


def test_overrides_in_both_flag_forms():
    argv = ["--workdir=x", "--config.sampler.num_steps", "4", "--config.seed=3", "--num_samples=9"]
    assert diffusion_sampling.overridden_keys(argv) == ["sampler.num_steps", "seed"]
    assert diffusion_sampling.config_file_given(argv) is None
    assert diffusion_sampling.config_file_given(["--config=a.py:edm"]) == "a.py:edm"
    assert diffusion_sampling.config_file_given(["--config", "b.py"]) == "b.py"


class _SavedConfig:
    """A checkpoint's saved-config lookup (the one thing resolve_config reads from it)."""

    directory = "ckpt"

    def __init__(self, saved):
        self.saved = saved

    def saved_config(self, step):
        return self.saved


def test_given_config_file_is_refused_when_the_checkpoint_has_one():
    saved = diffusion_digits.get_config("edm").to_dict()
    flags_config = diffusion_digits.get_config()
    _set(flags_config, "sampler.num_steps", 7)
    with pytest.raises(cli.ConfigError, match="--config=other.py.*saved with the checkpoint"):
        diffusion_sampling.resolve_config(
            _SavedConfig(saved), 1, flags_config, ["--config=other.py"]
        )
    merged = diffusion_sampling.resolve_config(
        _SavedConfig(saved), 1, flags_config, ["--config.sampler.num_steps", "7"]
    )
    assert merged.sampler.num_steps == 7 and merged.diffusion.D is None  # saved D, given steps
    # No saved config: the given file is what there is.
    assert diffusion_sampling.resolve_config(_SavedConfig(None), 1, flags_config, ["--config=f"])
    with pytest.raises(CheckpointError, match="has no saved config"):
        diffusion_sampling.resolve_config(_SavedConfig(None), 1, flags_config, [])
