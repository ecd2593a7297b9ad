"""Test setup: 8 virtual CPU devices, so mesh/sharding code runs as on a multi-chip host.

XLA reads the flag once, when the backend starts, so it is set before anything imports jax.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
