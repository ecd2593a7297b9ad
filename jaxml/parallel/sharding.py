"""Sharding rules: where each array of the train state and of a batch lives on the mesh."""

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

# The batch axis is split over every mesh axis: FSDP is data parallel too.
BATCH_AXES = ("data", "fsdp")


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension over all devices, the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))


def fsdp_partition_spec(shape: tuple[int, ...], fsdp_size: int, min_size: int = 2**14) -> P:
    """Shard the largest dimension divisible by `fsdp_size` over `fsdp`; else replicate.

    Arrays with fewer than `min_size` elements stay replicated: gathering them
    costs more than the memory they would save.
    """
    if fsdp_size == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    candidates = [(size, i) for i, size in enumerate(shape) if size % fsdp_size == 0]
    if not candidates:
        return P()
    _, dim = max(candidates)  # ties go to the later dimension
    spec = [None] * len(shape)
    spec[dim] = "fsdp"
    return P(*spec)


def state_shardings(abstract_tree: Any, mesh: Mesh, min_size: int = 2**14) -> Any:
    """NamedShardings for every leaf of a (possibly abstract) PyTree under the FSDP rule.

    The rule depends only on a leaf's shape, so Adam moments and EMA copies land
    exactly where their parameters do.
    """
    fsdp_size = mesh.shape["fsdp"]

    def leaf_sharding(leaf):
        shape = tuple(getattr(leaf, "shape", ()))
        return NamedSharding(mesh, fsdp_partition_spec(shape, fsdp_size, min_size))

    return jax.tree.map(leaf_sharding, abstract_tree)


def global_batch(local_batch: Any, sharding: NamedSharding) -> Any:
    """Global arrays from this process's rows of every leaf (rows stack process by process)."""
    process_count = jax.process_count()

    def to_global(x):
        x = np.asarray(x)
        global_shape = (x.shape[0] * process_count, *x.shape[1:])
        return jax.make_array_from_process_local_data(sharding, x, global_shape)

    return jax.tree.map(to_global, local_batch)
