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
  wrapped in `pallas_kernels.attention`; registered lazily on first use, so
  `import jaxml` never imports Pallas. Shapes a kernel cannot take fall back to
  XLA with a logged reason.
- "auto": picks one of the above per call from the default backend, the dtype
  and head_dim with `resolve_attention_impl`: TPU -> "pallas_tpu"; GPU ->
  "cudnn" for fp16/bf16 with head_dim <= 128 and a multiple of 8, else "xla";
  anything else (CPU) -> "xla", the same computation as "default". The U-Net
  still defaults to "default": the Pallas TPU kernel is not SPMD-partitioned
  (see `pallas_kernels.attention`), so "auto" is opt-in for sharded training.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

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


def resolve_attention_impl(backend: str, dtype, head_dim: int) -> str:
    """The implementation that `impl="auto"` uses (a pure function of its arguments).

    Args:
      backend: a JAX platform name, e.g. `jax.default_backend()`: "tpu", "gpu"
        (or "cuda"; "rocm" has no cuDNN and gets "xla"), "cpu", ...
      dtype: the dtype of q.
      head_dim: the per-head feature size.

    Returns:
      "pallas_tpu" on TPU; on a CUDA GPU "cudnn" when cuDNN's flash attention
      applies (float16/bfloat16, head_dim <= 128 and a multiple of 8), else
      "xla"; "xla" everywhere else.
    """
    backend = backend.lower()
    if backend == "tpu":
        return "pallas_tpu"
    if backend in ("gpu", "cuda"):
        half = jnp.dtype(dtype) in (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))
        if half and head_dim <= 128 and head_dim % 8 == 0:
            return "cudnn"
        return "xla"
    return "xla"


def _auto(q, k, v, *, scale):
    impl = resolve_attention_impl(jax.default_backend(), q.dtype, q.shape[-1])
    return _IMPLS[impl](q, k, v, scale=scale)


def _lazy_pallas(name: str) -> AttentionFn:
    """A placeholder that imports `pallas_kernels.attention`, whose `register()`
    replaces it in the registry, then calls the real kernel."""

    def fn(q, k, v, *, scale):
        from pallas_kernels import attention as pallas_attention  # noqa: PLC0415

        pallas_attention.register()
        if _IMPLS[name] is fn:
            raise RuntimeError(f"pallas_kernels.attention.register() did not register {name!r}.")
        return _IMPLS[name](q, k, v, scale=scale)

    return fn


# name -> implementation. "default" lets JAX pick (XLA in jax 0.10); "xla" and
# "cudnn" force one of jax.nn's backends; "auto" resolves per call (see above).
_IMPLS: dict[str, AttentionFn] = {
    "default": _jax_nn(None),
    "xla": _jax_nn("xla"),
    "cudnn": _jax_nn("cudnn"),
    "reference": reference_attention,
    "pallas_tpu": _lazy_pallas("pallas_tpu"),
    "pallas_gpu": _lazy_pallas("pallas_gpu"),
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
