"""The one attention entry point of the networks.

Every attention layer in `jaxml.models` calls `dot_product_attention`, so a
fused kernel (Pallas, cuDNN flash attention) is swapped in by name in one
place: register it with `register_attention_impl` and pass `impl=` (or set the
model's `attn_impl`). The plain-jnp "reference" stays as the ground truth that
kernels are tested against.

Shapes follow `jax.nn.dot_product_attention`: q (B, Lq, heads, head_dim),
k and v (B, Lk, heads, head_dim) -> (B, Lq, heads, head_dim).
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


# name -> implementation. "default" lets JAX pick (XLA on CPU/TPU, cuDNN where it
# applies); "xla" and "cudnn" force one of jax.nn's backends.
_IMPLS: dict[str, AttentionFn] = {
    "default": _jax_nn(None),
    "xla": _jax_nn("xla"),
    "cudnn": _jax_nn("cudnn"),
    "reference": reference_attention,
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
