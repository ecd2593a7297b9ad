"""The one place jaxml reaches into JAX's private modules (`jax._src`), and why.

JAX has no public way to ask "is this a Cloud TPU VM that belongs to a multi-host
slice?" before `jax.distributed.initialize()` (a TPU VM slice sets no environment
variable; JAX asks the VM metadata server). We reuse JAX's own detector rather than
query the metadata server ourselves. If a JAX release moves it,
`tests/test_jax_internals.py` fails with JaxInternalsMoved's message, and at run
time the detection logs a warning and reports "not a slice" (a pod then needs
--coordinator_address / JAXML_* variables, or TPU_WORKER_HOSTNAMES).

Everything else uses public APIs: e.g. the preemption sync manager is present exactly
when `jax.distributed.is_initialized()` and `jax.config.jax_enable_preemption_service`.
"""

import logging

log = logging.getLogger(__name__)

_CLOUD_TPU_MODULE = "jax._src.clusters.cloud_tpu_cluster"


class JaxInternalsMoved(ImportError):
    """A private JAX name jaxml relies on is gone or changed (a JAX upgrade moved it)."""


def cloud_tpu_cluster_module():
    """JAX's private cloud TPU cluster module, checked for the names we use."""
    import importlib

    import jax

    try:
        module = importlib.import_module(_CLOUD_TPU_MODULE)
    except ImportError as e:
        raise JaxInternalsMoved(
            f"jax {jax.__version__} has no {_CLOUD_TPU_MODULE} ({e}); update "
            "jaxml/parallel/jax_internals.py to where this JAX detects Cloud TPU VM slices"
        ) from e
    missing = [
        name
        for name, ok in (
            ("running_in_cloud_tpu_vm", hasattr(module, "running_in_cloud_tpu_vm")),
            (
                "GceTpuCluster.is_env_present",
                callable(getattr(getattr(module, "GceTpuCluster", None), "is_env_present", None)),
            ),
        )
        if not ok
    ]
    if missing:
        raise JaxInternalsMoved(
            f"jax {jax.__version__}'s {_CLOUD_TPU_MODULE} lacks {', '.join(missing)}; update "
            "jaxml/parallel/jax_internals.py to where this JAX detects Cloud TPU VM slices"
        )
    return module


def on_cloud_tpu_vm_slice() -> bool:
    """True on a (non-GKE) Cloud TPU VM that JAX can join to its slice by itself.

    Queries the metadata server only when JAX found TPU chips on this VM."""
    try:
        module = cloud_tpu_cluster_module()
    except JaxInternalsMoved as e:
        log.warning("cannot detect a Cloud TPU VM slice: %s", e)
        return False
    if not module.running_in_cloud_tpu_vm:
        return False
    try:
        return bool(module.GceTpuCluster.is_env_present())
    except Exception:  # noqa: BLE001 - metadata server unreachable: not a slice we can join
        return False
