"""The persistent compilation cache: a second process loads what the first compiled."""

import os
import re
import subprocess
import sys
from pathlib import Path

from jaxml.training import compile_cache

ROOT = Path(__file__).resolve().parents[1]
CODE = """
import logging, sys
import jax, jax.numpy as jnp
from jaxml.training.compile_cache import enable_compilation_cache, log_compilation
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s", force=True)
enable_compilation_cache(sys.argv[1], min_compile_seconds=0)
step = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
x = jnp.ones((16, 16))
with log_compilation("toy step"):
    print(float(step(x)))
"""


def run(cache_dir):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", CODE, str(cache_dir)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_second_process_reads_the_cache(tmp_path):
    cache = tmp_path / "xla"
    first = run(cache)
    assert "compiling toy step" in first
    assert re.search(r"toy step ready after [\d.]+ s \(0 from the compilation cache, [1-9]", first)
    assert any(cache.iterdir())
    second = run(cache)
    assert re.search(r"\([1-9]\d* from the compilation cache, 0 compiled\)", second), second


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv(compile_cache.ENV_VAR, "off")
    assert compile_cache.resolve_cache_dir() is None
    monkeypatch.setenv(compile_cache.ENV_VAR, "~/somewhere")
    assert compile_cache.resolve_cache_dir() == Path("~/somewhere").expanduser()
    monkeypatch.delenv(compile_cache.ENV_VAR)
    assert compile_cache.resolve_cache_dir() == compile_cache.DEFAULT_DIR.expanduser()
    assert compile_cache.resolve_cache_dir(tmp_path) == tmp_path
