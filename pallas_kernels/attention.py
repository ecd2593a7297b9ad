"""JAX's shipped Pallas flash-attention kernels behind `jaxml.models.attention`.

Two implementations with the registry's signature `fn(q, k, v, *, scale)` and its
layout, q (B, Lq, heads, head_dim), k and v (B, Lk, heads, head_dim):

- `pallas_tpu_attention`: `jax.experimental.pallas.ops.tpu.flash_attention`
  (Mosaic TPU). It wants (B, heads, L, head_dim), so q, k, v are transposed in
  and the output back. Its kernels need the key block to be a multiple of 128
  lanes that divides Lk (and the backward q block to divide Lq), so both
  sequence lengths must be multiples of 128; head_dim must be <= 128 or a
  multiple of 128; dtype float32 or bfloat16.
- `pallas_gpu_attention`: `jax.experimental.pallas.ops.gpu.attention.mha`
  (Triton), already in our layout. Sequence lengths must be multiples of 16
  (the smallest Triton dot tile), head_dim >= 16 (it is padded to a power of 2
  inside the kernel).

Shapes that a kernel cannot take fall back to XLA (`jax.nn.dot_product_attention(
implementation="xla")`), and the reason is logged once per distinct reason; the
`*_unsupported_reason` functions return it (None when the kernel runs). For the
U-Net configs in this repo that means: CIFAR-10 DDPM++ attention at 16x16
(L=256, head_dim=256) runs the TPU kernel, its 8x8 bottleneck (L=64) and all
digits models (L=16 or 64) take XLA on TPU.

Interpret mode (`interpret=True`) runs the kernels on CPU for tests:
- TPU: the kernel has no `interpret` argument; its forward and its custom-VJP
  backward are traced under `pltpu.force_tpu_interpret_mode(pltpu.InterpretParams())`,
  which makes every `pallas_call` traced inside run in the TPU interpreter
  (simulated VMEM/HBM, DMAs and semaphores). A `pallas_call` reads the setting
  when it is traced, so the backward needs its own context (see
  `_in_tpu_interpreter`).
- GPU: `mha(..., interpret=True)` (the generic Pallas HLO interpreter).

Multi-device: a `pallas_call` is a custom call that XLA's SPMD partitioner does
not split (jax-ml/jax#19748); `jaxml.models.attention` runs these functions
inside `shard_map` over the mesh's batch axes. Neither kernel has been run on
real hardware in this repo yet, only in interpret mode.

Block sizes are simple heuristics (largest power-of-2 tile that divides the
sequence length, capped), not tuned on hardware; pass `block_sizes=` to override.

This module imports only JAX. `jaxml.models.attention` imports it on the first
call of `impl="pallas_tpu"` / `"pallas_gpu"`, so `import jaxml` does not import Pallas.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp

Array = jax.Array

log = logging.getLogger(__name__)
_logged: set = set()

# Mosaic: the kernel tiles keys in multiples of the 128-lane vector width.
TPU_LANES = 128
# Triton: tl.dot needs every matrix dimension >= 16.
GPU_MIN_BLOCK = 16


def _largest_dividing(n: int, candidates: tuple) -> int | None:
    return next((b for b in candidates if b <= n and n % b == 0), None)


def _xla(q: Array, k: Array, v: Array, *, scale: float) -> Array:
    return jax.nn.dot_product_attention(q, k, v, scale=scale, implementation="xla")


def _fallback(name: str, reason: str, q, k, v, scale):
    if (name, reason) not in _logged:
        _logged.add((name, reason))
        log.warning("%s attention falls back to XLA: %s", name, reason)
    return _xla(q, k, v, scale=scale)


# --------------------------------------------------------------------------- TPU


def tpu_unsupported_reason(q_shape, k_shape, dtype) -> str | None:
    """Why the shipped TPU flash-attention kernel cannot take these shapes (None: it can)."""
    lq, lk, head_dim = q_shape[1], k_shape[1], q_shape[-1]
    if jnp.dtype(dtype) not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
        return f"dtype {jnp.dtype(dtype).name} (the Mosaic kernel takes float32 or bfloat16)"
    if lq % TPU_LANES or lk % TPU_LANES:
        return (
            f"sequence lengths Lq={lq}, Lk={lk} are not multiples of {TPU_LANES} "
            "(the kernel's key block must be a multiple of 128 that divides Lk, and the "
            "backward query block must divide Lq)"
        )
    if head_dim > TPU_LANES and head_dim % TPU_LANES:
        return f"head_dim={head_dim} is > 128 and not a multiple of 128"
    return None


def tpu_block_sizes(lq: int, lk: int):
    """Untuned tiles: the largest of 512/256/128 that divides L forward, of 256/128 backward."""
    from jax.experimental.pallas.ops.tpu.flash_attention import BlockSizes  # noqa: PLC0415

    fq, fk = _largest_dividing(lq, (512, 256, 128)), _largest_dividing(lk, (512, 256, 128))
    bq, bk = _largest_dividing(lq, (256, 128)), _largest_dividing(lk, (256, 128))
    return BlockSizes(
        block_q=fq,
        block_k_major=fk,
        block_k=fk,
        block_b=1,
        block_q_major_dkv=bq,
        block_k_major_dkv=bk,
        block_k_dkv=bk,
        block_q_dkv=bq,
        block_k_major_dq=bk,
        block_k_dq=bk,
        block_q_dq=bq,
    )


def pallas_tpu_attention(
    q: Array, k: Array, v: Array, *, scale: float, interpret: bool = False, block_sizes=None
) -> Array:
    """Pallas TPU flash attention in our (B, L, heads, head_dim) layout, XLA where it can't run.

    Args:
      q, k, v: see the module docstring.
      scale: logit scale (the kernel's `sm_scale`).
      interpret: run in the TPU interpreter (CPU tests).
      block_sizes: a `flash_attention.BlockSizes` with all backward blocks set;
        defaults to `tpu_block_sizes(Lq, Lk)`.
    """
    reason = tpu_unsupported_reason(q.shape, k.shape, q.dtype)
    if reason is not None:
        return _fallback("pallas_tpu", reason, q, k, v, scale)
    from jax.experimental.pallas.ops.tpu.flash_attention import flash_attention  # noqa: PLC0415

    if block_sizes is None:
        block_sizes = tpu_block_sizes(q.shape[1], k.shape[1])
    to_bhld = lambda t: jnp.swapaxes(t, 1, 2)

    def call(q, k, v):
        out = flash_attention(
            to_bhld(q),
            to_bhld(k),
            to_bhld(v),
            sm_scale=float(scale),
            block_sizes=block_sizes,
        )
        return to_bhld(out)

    if not interpret:
        return call(q, k, v)
    return _in_tpu_interpreter(call)(q, k, v)


def _in_tpu_interpreter(fn):
    """fn with its forward and its backward traced under `force_tpu_interpret_mode`.

    A `pallas_call` reads the interpret setting when it is traced, and the kernel's
    custom-VJP backward is traced only when the gradient is taken (after the
    forward returned), so a plain `with` around the forward call would leave the
    backward kernels compiled for a real TPU.
    """
    from jax.experimental.pallas import tpu as pltpu  # noqa: PLC0415

    ctx = lambda: pltpu.force_tpu_interpret_mode(pltpu.InterpretParams())

    @jax.custom_vjp
    def wrapped(*args):
        with ctx():
            return fn(*args)

    def fwd(*args):
        with ctx():
            # vjp_fn is a pytree (jax.tree_util.Partial), so it can be the residual.
            return jax.vjp(fn, *args)

    def bwd(vjp_fn, ct):
        with ctx():
            return vjp_fn(ct)

    wrapped.defvjp(fwd, bwd)
    return wrapped


# --------------------------------------------------------------------------- GPU


def gpu_block_sizes(lq: int, lk: int, head_dim: int):
    """Untuned tiles: forward the largest of 128/64/32/16 dividing L (64 at most for
    head_dim > 128, to bound shared memory), backward 32 or 16 (the kernel's default is 32)."""
    from jax.experimental.pallas.ops.gpu.attention import BlockSizes  # noqa: PLC0415

    fwd = (64, 32, 16) if head_dim > 128 else (128, 64, 32, 16)
    return BlockSizes(
        block_q=_largest_dividing(lq, fwd),
        block_k=_largest_dividing(lk, fwd),
        block_q_dkv=_largest_dividing(lq, (32, 16)),
        block_kv_dkv=_largest_dividing(lk, (32, 16)),
        block_q_dq=_largest_dividing(lq, (32, 16)),
        block_kv_dq=_largest_dividing(lk, (32, 16)),
    )


def gpu_unsupported_reason(q_shape, k_shape, dtype) -> str | None:
    """Why the shipped Pallas GPU (Triton) attention cannot take these shapes (None: it can)."""
    del dtype  # float32, float16 and bfloat16 all lower.
    lq, lk, head_dim = q_shape[1], k_shape[1], q_shape[-1]
    if lq % GPU_MIN_BLOCK or lk % GPU_MIN_BLOCK:
        return f"sequence lengths Lq={lq}, Lk={lk} are not multiples of {GPU_MIN_BLOCK}"
    if head_dim < GPU_MIN_BLOCK:
        return f"head_dim={head_dim} < {GPU_MIN_BLOCK} (Triton dot tiles)"
    bq, bk = _largest_dividing(lq, (32, 16)), _largest_dividing(lk, (32, 16))
    if lq // bq != lk // bk:
        return (
            f"the fused backward needs Lq and Lk in the same number of blocks; Lq={lq} "
            f"in blocks of {bq}, Lk={lk} in blocks of {bk}"
        )
    return None


def pallas_gpu_attention(
    q: Array, k: Array, v: Array, *, scale: float, interpret: bool = False, block_sizes=None
) -> Array:
    """Pallas GPU (Triton) flash attention, `ops.gpu.attention.mha`; XLA where it can't run.

    Args:
      q, k, v: see the module docstring (already the kernel's layout).
      scale: logit scale (the kernel's `sm_scale`).
      interpret: run in the Pallas interpreter (CPU tests).
      block_sizes: an `attention.BlockSizes` with all backward blocks set;
        defaults to `gpu_block_sizes(Lq, Lk, head_dim)`.
    """
    reason = gpu_unsupported_reason(q.shape, k.shape, q.dtype)
    if reason is not None:
        return _fallback("pallas_gpu", reason, q, k, v, scale)
    from jax.experimental.pallas.ops.gpu.attention import mha  # noqa: PLC0415

    if block_sizes is None:
        block_sizes = gpu_block_sizes(q.shape[1], k.shape[1], q.shape[-1])
    return mha(q, k, v, None, sm_scale=float(scale), block_sizes=block_sizes, interpret=interpret)
