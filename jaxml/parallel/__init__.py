"""Device mesh, sharding rules, global batches and multi-host initialization."""

from jaxml.parallel.distributed import maybe_initialize_distributed
from jaxml.parallel.mesh import MESH_AXES, MeshShapeError, make_mesh, resolve_mesh_shape
from jaxml.parallel.sharding import (
    batch_sharding,
    fsdp_partition_spec,
    global_batch,
    replicated,
    state_shardings,
)

__all__ = [
    "MESH_AXES",
    "MeshShapeError",
    "batch_sharding",
    "fsdp_partition_spec",
    "global_batch",
    "make_mesh",
    "maybe_initialize_distributed",
    "replicated",
    "resolve_mesh_shape",
    "state_shardings",
]
