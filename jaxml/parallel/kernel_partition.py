"""Run a Pallas kernel per device: `shard_map` over the mesh's batch axes.

XLA's SPMD partitioner cannot split a Pallas custom call (jax-ml/jax#19748): under
`jit` with a batch-sharded input it would gather the whole global batch onto every
device (or fail to compile). `over_batch` wraps the call in `jax.shard_map` so the
kernel is traced with per-device shapes and each device runs it on its own rows.

The mesh is the ambient one, `jax.sharding.get_abstract_mesh()`: set it with
`with jax.set_mesh(mesh):` around the jitted step (its tracing). With no mesh set
(or a mesh whose batch axes have size 1) the kernel is called directly, as on one
device. Only the batch axes are mapped; other dims are passed whole to each device
(a state axis sharded by the caller would be gathered first, which is correct but
not free).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import jax
from jax.sharding import PartitionSpec

from jaxml.parallel.sharding import BATCH_AXES

log = logging.getLogger(__name__)
_warned: set = set()


def batch_mesh_axes() -> tuple[tuple[str, ...], int]:
    """The ambient mesh's batch axes of size > 1 and their total size ((), 1 without a mesh)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return (), 1
    # Axes already manual (inside an enclosing shard_map) are per-device already.
    manual = set(mesh.manual_axes)
    axes = tuple(
        a for a in BATCH_AXES if a in mesh.axis_names and mesh.shape[a] > 1 and a not in manual
    )
    return axes, math.prod(mesh.shape[a] for a in axes)


def over_batch(
    fn: Callable, args: Sequence, batch_dims: Sequence[int | None], out_batch_dim: int = 0
):
    """fn(*args), run inside `shard_map` with each arg split along its batch dim.

    Args:
      fn: the kernel call; takes per-device arrays, returns one array.
      args: arrays or None (None passes through unmapped).
      batch_dims: per arg, the dim holding the batch, or None for an arg every
        device needs whole (e.g. one Lambda_bar shared by the batch).
      out_batch_dim: the batch dim of fn's output.
    """
    axes, n = batch_mesh_axes()
    sizes = {a.shape[d] for a, d in zip(args, batch_dims) if a is not None and d is not None}
    if not axes or not sizes:
        return fn(*args)
    if any(size % n for size in sizes):
        key = (getattr(fn, "__name__", str(fn)), tuple(sizes), n)
        if key not in _warned:
            _warned.add(key)
            log.warning(
                "%s: batch %s does not split over %d devices (mesh axes %s); running it "
                "unpartitioned (every device computes the whole batch)",
                key[0],
                sorted(sizes),
                n,
                axes,
            )
        return fn(*args)

    def spec(dim):
        return PartitionSpec() if dim is None else PartitionSpec(*([None] * dim), axes)

    present = [i for i, a in enumerate(args) if a is not None]

    def per_device(*local):
        full = list(args)
        for i, x in zip(present, local):
            full[i] = x
        return fn(*full)

    mapped = jax.shard_map(
        per_device,
        mesh=jax.sharding.get_abstract_mesh(),
        in_specs=tuple(spec(batch_dims[i]) for i in present),
        out_specs=spec(out_batch_dim),
        check_vma=False,
    )
    return mapped(*(args[i] for i in present))
