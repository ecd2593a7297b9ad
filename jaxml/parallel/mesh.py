"""The device mesh: always built, 1 device on a laptop, thousands on a pod.

Axes: `data` (pure data parallelism: parameters replicated) and `fsdp`
(parameters and optimizer state sharded; the batch is split over both axes).
"""

from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

MESH_AXES = ("data", "fsdp")


class MeshShapeError(ValueError):
    """The requested mesh shape does not fit the devices."""


def resolve_mesh_shape(shape: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
    """Sizes for MESH_AXES from e.g. {"data": -1, "fsdp": 4}; -1 takes all remaining devices."""
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
        raise MeshShapeError(f"unknown mesh axes {sorted(unknown)}; the axes are {MESH_AXES}")
    sizes = [int(shape.get(axis, 1)) for axis in MESH_AXES]
    if sum(s == -1 for s in sizes) > 1:
        raise MeshShapeError(f"at most one mesh axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
    if any(s == 0 or s < -1 for s in sizes):
        raise MeshShapeError(
            f"mesh axis sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}"
        )
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if num_devices % known:
            raise MeshShapeError(
                f"mesh {dict(zip(MESH_AXES, sizes))} does not fit {num_devices} devices: "
                f"{num_devices} is not divisible by {known}"
            )
        sizes[sizes.index(-1)] = num_devices // known
    if int(np.prod(sizes)) != num_devices:
        raise MeshShapeError(
            f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices but "
            f"{num_devices} are available; use -1 for one axis to take the rest"
        )
    return tuple(sizes)


def make_mesh(
    shape: Mapping[str, int] | None = None, devices: Sequence[jax.Device] | None = None
) -> Mesh:
    """A Mesh over `devices` (default: all devices of all processes) with axes MESH_AXES."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = resolve_mesh_shape(shape or {"data": -1}, len(devices))
    return jax.make_mesh(
        sizes, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices
    )
