"""jaxml.training.cli: up-front config checks (one line naming the key, exit 2), `~` in paths,
and which log lines a run_main program shows."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ml_collections
import pytest

from jaxml.training import cli

ROOT = Path(__file__).resolve().parent.parent


def _config():
    config = ml_collections.ConfigDict(
        {
            "total_steps": 10,
            "log_every": 5,
            "checkpoint_every": 5,
            "nan_policy": "stop",
            "sampler": {"name": "heun", "num_steps": 18, "s_churn": 0.0, "D": None},
            "data": {"batch_size": 16, "data_dir": None, "name": "digits"},
        },
        type_safe=False,  # so that a test can put a value of the wrong type in
    )
    config.data.data_dir = ml_collections.FieldReference(None, field_type=str)
    config.lock()
    return config


def _exit_line(capsys, check, *args, **kwargs):
    """Runs a check the way run_main does; returns (exit status, stderr lines)."""
    with pytest.raises(SystemExit) as exit_info, cli.exit_on_user_error():
        check(*args, **kwargs)
    return exit_info.value.code, capsys.readouterr().err.splitlines()


def test_bad_choice_exits_2_with_one_line_naming_the_key(capsys):
    config = _config()
    config.sampler.name = "hen"
    code, lines = _exit_line(capsys, cli.check_choice, config, "sampler.name", ("euler", "heun"))
    assert code == 2
    assert lines == ["error: config.sampler.name must be one of 'euler', 'heun'; got 'hen'"]


@pytest.mark.parametrize(
    "key, value, check, kwargs, words",
    [
        ("sampler.num_steps", 0, cli.check_positive, {}, "must be positive; got 0"),
        ("sampler.num_steps", "18", cli.check_positive, {}, "must be positive; got '18'"),
        ("sampler.num_steps", True, cli.check_positive, {}, "must be positive; got True"),
        ("sampler.s_churn", -0.5, cli.check_positive, {"allow_zero": True}, "non-negative"),
        ("sampler.D", None, cli.check_positive, {}, "must be positive; got None"),
        ("sampler.s_churn", 2.0, cli.check_range, {"low": 0, "high": 1}, "in [0, 1]; got 2.0"),
        ("data.batch_size", 12, cli.check_device_multiple, {}, "multiple of the device count"),
        ("total_steps", -1, cli.check_loop_config, {}, "total_steps must be positive"),
    ],
)
def test_bad_values_exit_2_naming_the_key(capsys, key, value, check, kwargs, words):
    config = _config()
    section, _, name = key.rpartition(".")
    (config[section] if section else config)[name] = value
    args = (config,) if check is cli.check_loop_config else (config, key)
    code, lines = _exit_line(capsys, check, *args, **kwargs)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: config.{key}") and words in lines[0], lines


def test_good_values_pass_and_missing_keys_are_named():
    config = _config()
    cli.check_choice(config, "sampler.name", ("euler", "heun"))
    cli.check_positive(config, "sampler.num_steps")
    cli.check_positive(config, "sampler.s_churn", allow_zero=True)
    cli.check_positive(config, "sampler.D", allow_none=True)
    cli.check_range(config, "sampler.s_churn", 0, 1)
    cli.check_loop_config(config, ["data.batch_size"])  # 16 is a multiple of the 8 test devices
    with pytest.raises(cli.ConfigError, match=r"config\.sampler\.nme is missing"):
        cli.check_choice(config, "sampler.nme", ("euler",))


def test_user_paths_are_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    config = _config()
    config.data.data_dir = "~/tfds"
    config.sampler.name = "~not-a-path-but-starts-with-tilde"  # expanduser leaves ~user alone
    cli.expand_user_paths(config)
    assert config.data.data_dir == f"{tmp_path}/tfds"
    assert config.data.name == "digits"
    assert cli.expand_user_path("~/runs/x") == f"{tmp_path}/runs/x"
    assert cli.expand_user_path("gs://bucket/~x") == "gs://bucket/~x"
    assert cli.expand_user_path(None) is None


PROGRAM = textwrap.dedent(
    """
    import logging
    from jaxml.training import cli
    cli.define_flags({config!r})

    def main(config, workdir):
        logging.getLogger("jaxml.probe").info("jaxml-info-line")
        logging.getLogger("train.probe").info("train-info-line")
        logging.getLogger("orbax.probe").info("orbax-info-noise")
        logging.getLogger("jax._src.probe").info("jax-info-noise")
        print("workdir", workdir)
        print("data_dir", config.data.data_dir)
        cli.check_choice(config, "nan_policy", ("stop", "skip"))

    cli.run_main(main)
    """
)


def test_run_main_program_logs_info_expands_paths_and_exits_2(tmp_path):
    program = tmp_path / "program.py"
    program.write_text(PROGRAM.format(config=str(ROOT / "train/configs/s5_mnist1d.py")))
    env = dict(os.environ, HOME=str(tmp_path), PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    args = ["--workdir=~/wd", "--config.data.data_dir=~/tfds", "--config.nan_policy=never"]
    proc = subprocess.run(
        [sys.executable, str(program), *args], capture_output=True, text=True, env=env, timeout=120
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "jaxml-info-line" in out and "train-info-line" in out, out
    assert "noise" not in out, out
    assert f"workdir {tmp_path}/wd" in proc.stdout
    assert f"data_dir {tmp_path}/tfds" in proc.stdout
    assert proc.stderr.splitlines()[-1] == (
        "error: config.nan_policy must be one of 'stop', 'skip'; got 'never'"
    )
    assert "Traceback" not in proc.stderr
