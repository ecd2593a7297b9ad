"""Multi-host start-up: `jax.distributed.initialize()` when, and only when, the job asks for it.

The same runtime serves TPU pods, SLURM GPU clusters and several CPU processes
on one machine (gloo collectives), which is how the tests exercise it.
"""

import logging
import os

import jax

from jaxml.parallel import jax_internals

log = logging.getLogger(__name__)

_ENV_COORDINATOR = "JAXML_COORDINATOR_ADDRESS"
_ENV_NUM_PROCESSES = "JAXML_NUM_PROCESSES"
_ENV_PROCESS_ID = "JAXML_PROCESS_ID"
_ENV_HEARTBEAT_TIMEOUT = "JAXML_HEARTBEAT_TIMEOUT"


def _detected_cluster() -> str | None:
    """Name of a multi-host environment JAX can initialize itself from, else None."""
    hostnames = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if len([h for h in hostnames.split(",") if h]) > 1 or os.environ.get(
        "MEGASCALE_COORDINATOR_ADDRESS"
    ):
        return "tpu_pod"
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
        return "slurm"
    if int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return "mpi"
    if jax_internals.on_cloud_tpu_vm_slice():
        return "tpu_pod"
    return None


def maybe_initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    initialization_timeout: int = 300,
    heartbeat_timeout: int | None = None,
) -> bool:
    """Initializes jax.distributed if flags, JAXML_* variables or the cluster ask for it.

    Returns True when this is a multi-process job. Must run before any other JAX
    call touches the devices. `heartbeat_timeout` (seconds, default JAX's 100 or
    $JAXML_HEARTBEAT_TIMEOUT) bounds how long the others wait for a process that
    died: the coordination service then ends them with an error naming it.
    """
    coordinator_address = coordinator_address or os.environ.get(_ENV_COORDINATOR) or None
    if num_processes is None and os.environ.get(_ENV_NUM_PROCESSES):
        num_processes = int(os.environ[_ENV_NUM_PROCESSES])
    if process_id is None and os.environ.get(_ENV_PROCESS_ID):
        process_id = int(os.environ[_ENV_PROCESS_ID])

    explicit = coordinator_address is not None or (num_processes or 1) > 1
    cluster = None if explicit else _detected_cluster()
    if not explicit and cluster is None:
        return False
    if explicit and (coordinator_address is None or num_processes is None or process_id is None):
        raise ValueError(
            "multi-process run needs all of coordinator_address, num_processes and process_id "
            f"(got {coordinator_address!r}, {num_processes!r}, {process_id!r})"
        )

    platforms = os.environ.get("JAX_PLATFORMS", "") or str(jax.config.jax_platforms or "")
    if platforms.startswith("cpu") or platforms == "":
        # CPU processes need a collectives backend; harmless when a GPU/TPU is used instead.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    log.info(
        "initializing jax.distributed (%s)",
        cluster or f"{num_processes} processes via {coordinator_address}",
    )
    if heartbeat_timeout is None and os.environ.get(_ENV_HEARTBEAT_TIMEOUT):
        heartbeat_timeout = int(os.environ[_ENV_HEARTBEAT_TIMEOUT])
    if heartbeat_timeout is not None and heartbeat_timeout <= 0:
        raise ValueError(f"heartbeat timeout must be positive, got {heartbeat_timeout}")
    timeouts = {} if heartbeat_timeout is None else {"heartbeat_timeout_seconds": heartbeat_timeout}
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=initialization_timeout,
        **timeouts,
    )
    return True
