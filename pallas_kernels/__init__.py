"""Pallas kernels behind jaxml's pluggable implementations. A leaf: imports only JAX.

- `pallas_kernels.linear_scan`: the diagonal linear recurrence h_t = a_t h_{t-1} + b_t
  (`linear_scan_tpu`: Mosaic, `linear_scan_gpu`: Triton, `scan_planes`: shared
  arithmetic; interpret mode on CPU), used by `linear_recurrence(impl="pallas")`.
- `pallas_kernels.attention`: JAX's Pallas flash-attention kernels in our layout,
  used by `jaxml.models.attention` (impl="pallas_tpu" / "pallas_gpu").

Importing this package imports nothing; the modules import Pallas only when they
build a kernel. jaxml owns the impl= registries and imports these lazily, and runs
them inside `shard_map` under a mesh (`jaxml.parallel.kernel_partition`).
"""
