"""Test setup: 8 virtual CPU devices, and compiled kernel cases where the hardware is.

XLA reads the device-count flag once, when the CPU backend starts, so it is set
before anything imports jax; `jax.devices("cpu")` then has 8 devices on any machine.

JAX_PLATFORMS=cpu is set only when no accelerator plugin (CUDA, TPU) is installed:
on a GPU or TPU machine JAX keeps its default backend, and the cases marked
`gpu` / `tpu` run there compiled. Everywhere else they are reported as skips with
the reason. (The mesh/multi-process tests want the CPU devices; run the whole suite
on an accelerator machine with JAX_PLATFORMS=cpu, and the kernel cases with
`-m "gpu or tpu"`, as benchmarks/accelerator_check.sh does.)
"""

import importlib.metadata
import importlib.util
import os

import pytest

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

ACCELERATOR_MODULES = ("jax_cuda12_plugin", "jax_cuda13_plugin", "libtpu")


def accelerator_plugin_installed() -> bool:
    """Whether JAX could start a GPU/TPU backend here (without importing jax)."""
    if any(importlib.util.find_spec(m) is not None for m in ACCELERATOR_MODULES):
        return True
    return any(True for _ in importlib.metadata.entry_points(group="jax_plugins"))


if not accelerator_plugin_installed():
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def pytest_collection_modifyitems(config, items):
    import jax  # noqa: PLC0415  (after the environment above is set)

    backend = jax.default_backend()
    for item in items:
        for platform in ("gpu", "tpu"):
            if backend != platform and any(item.iter_markers(name=platform)):
                reason = f"compiled {platform.upper()} case; jax.default_backend() is {backend!r}"
                item.add_marker(pytest.mark.skip(reason=reason))
