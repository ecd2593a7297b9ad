"""Pallas kernels behind jaxml's pluggable implementations.

- `pallas_kernels.linear_scan`: the diagonal linear recurrence h_t = a_t h_{t-1} + b_t
  (TPU: Mosaic, GPU: Triton, CPU: interpret mode), `linear_recurrence(impl="pallas")`.
- `pallas_kernels.attention`: JAX's Pallas flash-attention kernels for
  `jaxml.models.attention`.

Importing this package imports nothing; `linear_scan` imports Pallas only when it
builds a kernel, so jaxml can load it lazily on first use.
"""
