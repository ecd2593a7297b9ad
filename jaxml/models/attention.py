"""The one attention entry point of the networks.

Every attention layer in `jaxml.models` calls `dot_product_attention`, so a
fused kernel (Pallas, cuDNN flash attention) is swapped in by name in one
place: register it with `register_attention_impl` and pass `impl=` (or set the
model's `attn_impl`). The plain-jnp "reference" stays as the ground truth that
kernels are tested against.

Shapes follow `jax.nn.dot_product_attention`: q (B, Lq, heads, head_dim),
k and v (B, Lk, heads, head_dim) -> (B, Lq, heads, head_dim).

Implementations (`impl=`):
- "default", "xla": `jax.nn.dot_product_attention` with implementation None /
  "xla" (in jax 0.10 both are the XLA einsum-softmax-einsum path).
- "cudnn": jax.nn's cuDNN flash attention (GPU; fp16/bf16, head_dim <= 128 and
  a multiple of 8).
- "reference": plain jnp, float32 logits.
- "pallas_tpu", "pallas_gpu": JAX's shipped Pallas flash-attention kernels,
  wrapped in `pallas_kernels.attention` (a leaf package: it imports only JAX and
  knows nothing of this registry). This module imports it on the first call, so
  `import jaxml` never imports Pallas. Shapes a kernel cannot take fall back to
  XLA with a logged reason. Under a mesh (`with jax.set_mesh(mesh):` around the
  jitted step) the kernel runs inside `shard_map` over the mesh's batch axes
  (`jaxml.parallel.kernel_partition`): XLA cannot partition a Pallas call.
- "auto": `resolve_attention_impl(backend, dtype, head_dim)`: the implementation
  a committed benchmark showed correct and fastest on this backend
  (`jaxml.auto_impl.ATTENTION_AUTO_IMPL`; none measured yet), when it applies to
  the dtype and head_dim; else "xla", the same computation as "default".
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxml import auto_impl
from jaxml.parallel.kernel_partition import over_batch

Array = jax.Array
# fn(q, k, v, *, scale) -> out; scale is already resolved to a float.
AttentionFn = Callable[..., Array]


def reference_attention(q: Array, k: Array, v: Array, *, scale: float) -> Array:
    """softmax(q·kᵀ·scale)·v in plain jnp; logits and softmax in float32 as in EDM."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32))
    weights = jax.nn.softmax(logits * scale, axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v.astype(jnp.float32))
    return out.astype(q.dtype)


def _jax_nn(implementation: str | None) -> AttentionFn:
    def fn(q, k, v, *, scale):
        return jax.nn.dot_product_attention(q, k, v, scale=scale, implementation=implementation)

    return fn


def cudnn_applies(dtype, head_dim: int) -> bool:
    """cuDNN flash attention through jax.nn: float16/bfloat16, head_dim <= 128, multiple of 8."""
    half = jnp.dtype(dtype) in (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))
    return half and head_dim <= 128 and head_dim % 8 == 0


def resolve_attention_impl(backend: str, dtype, head_dim: int, table=None) -> str:
    """The implementation that `impl="auto"` uses (a pure function of its arguments).

    Args:
      backend: a JAX platform name, e.g. `jax.default_backend()` ("cuda" counts as "gpu").
      dtype: the dtype of q.
      head_dim: the per-head feature size.
      table: backend -> measured implementation; default `jaxml.auto_impl.ATTENTION_AUTO_IMPL`.

    Returns:
      The table's entry for the backend when it applies ("cudnn" only where
      `cudnn_applies`); otherwise "xla". The Pallas kernels check their own
      shapes and fall back to XLA themselves.
    """
    backend = backend.lower()
    backend = "gpu" if backend == "cuda" else backend
    table = auto_impl.ATTENTION_AUTO_IMPL if table is None else table
    impl = table.get(backend, auto_impl.ATTENTION_SAFE_IMPL)
    if impl == "cudnn" and not cudnn_applies(dtype, head_dim):
        return auto_impl.ATTENTION_SAFE_IMPL
    return impl


def _auto(q, k, v, *, scale):
    impl = resolve_attention_impl(jax.default_backend(), q.dtype, q.shape[-1])
    return _IMPLS[impl](q, k, v, scale=scale)


def _pallas(name: str) -> AttentionFn:
    """`pallas_kernels.attention.<name>_attention`, imported on the first call and run
    per device (shard_map over the mesh's batch axes)."""

    def fn(q, k, v, *, scale):
        from pallas_kernels import attention as kernels  # noqa: PLC0415

        kernel = getattr(kernels, f"{name}_attention")
        call = lambda q, k, v: kernel(q, k, v, scale=scale)
        return over_batch(call, (q, k, v), (0, 0, 0))

    fn.__name__ = name
    return fn


# name -> implementation. "default" lets JAX pick (XLA in jax 0.10); "xla" and
# "cudnn" force one of jax.nn's backends; "auto" resolves per call (see above).
_IMPLS: dict[str, AttentionFn] = {
    "default": _jax_nn(None),
    "xla": _jax_nn("xla"),
    "cudnn": _jax_nn("cudnn"),
    "reference": reference_attention,
    "pallas_tpu": _pallas("pallas_tpu"),
    "pallas_gpu": _pallas("pallas_gpu"),
    "auto": _auto,
}


def register_attention_impl(name: str, fn: AttentionFn) -> None:
    """Makes `fn(q, k, v, *, scale)` selectable as `impl=name` (e.g. a Pallas kernel)."""
    _IMPLS[name] = fn


def attention_impls() -> tuple:
    """The registered implementation names."""
    return tuple(_IMPLS)


def dot_product_attention(
    q: Array, k: Array, v: Array, *, impl: str = "default", scale: float | None = None
) -> Array:
    """Multi-head scaled dot-product attention (no mask, no bias).

    Args:
      q: (B, Lq, heads, head_dim) queries.
      k, v: (B, Lk, heads, head_dim) keys and values.
      impl: a registered implementation name, see `attention_impls()`.
      scale: logit scale; defaults to 1/sqrt(head_dim).

    Returns:
      (B, Lq, heads, head_dim), in q's dtype.
    """
    if impl not in _IMPLS:
        raise ValueError(f"Unknown attention impl {impl!r}; choose one of {sorted(_IMPLS)}.")
    if (
        q.ndim != 4
        or k.shape != v.shape
        or k.ndim != 4
        or q.shape[::2] != k.shape[::2]
        or (q.shape[-1] != k.shape[-1])
    ):
        raise ValueError(
            "dot_product_attention expects q (B, Lq, heads, head_dim) and k, v "
            f"(B, Lk, heads, head_dim); got q {q.shape}, k {k.shape}, v {v.shape}."
        )
    if scale is None:
        scale = 1.0 / float(q.shape[-1]) ** 0.5
    return _IMPLS[impl](q, k, v, scale=scale)
