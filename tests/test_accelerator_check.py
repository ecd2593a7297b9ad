"""benchmarks/accelerator_check.sh: the dry run in the default suite, the CPU smoke run as slow."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "accelerator_check.sh"
STEPS = ("tests", "scan", "unet", "attention")


def run(*args, env_extra=None, timeout=600):
    env = {**os.environ, "PYTHON": sys.executable, "JAX_PLATFORMS": "cpu", **(env_extra or {})}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_dry_run_prints_the_plan_and_checks_imports():
    proc = run("--dry-run", timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for step in STEPS:
        assert f"[{step}, timeout" in proc.stdout
    assert "-m 'gpu or tpu'" in proc.stdout
    assert "imports ok" in proc.stdout and "dry run ok" in proc.stdout


def test_bad_argument_is_one_line_and_exit_2():
    proc = run("--fast", timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("usage:") and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_smoke_run_writes_every_result(tmp_path):
    out = tmp_path / "accel"
    proc = run("--smoke", env_extra={"ACCEL_OUT": str(out)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["steps"]) == set(STEPS)
    assert all(s["exit_code"] == 0 for s in summary["steps"].values()), summary
    for name in ("scan.json", "unet_step.json", "attention.json", "tests.xml"):
        assert (out / name).exists(), name
    unet = json.loads((out / "unet_step.json").read_text())["results"][0]
    assert unet["images_per_s"] > 0 and unet["flops_per_step"] > 0
    # On CPU the compiled kernel cases are reported as skips, with the reason.
    assert "compiled GPU case" in (out / "tests.log").read_text()
