"""Pallas kernel for the diagonal linear recurrence h_t = a_t * h_{t-1} + b_t.

    h = linear_scan(a, b, h0, reverse=False, reset=None)

Layout: `b` is (batch, L, P); `a` is either full, (batch or 1, L, P), or
time-invariant, (batch or 1, 1, P) -- the S5 case, one discretized Lambda_bar
for every step, which is read once per block and never broadcast to
(batch, L, P). `h0` (batch, P) is the state before the first step (after the
last one when `reverse`). `reset` (batch, L) bool restarts the recurrence:
h_t = b_t where it is set, i.e. a_t is treated as 0 there.

Numerics. Complex inputs (complex64) travel as separate real and imaginary
float32 planes, since neither Mosaic nor Triton has complex types; the planes
are split and joined again in XLA around the kernel. The carry is float32 for
every input dtype (bfloat16 and float16 included); h is written in the input
dtype. float64 / complex128 are not supported.

Kernel structure. The grid runs over (batch, time segment, P block[, L chunk]);
the variants live in `linear_scan_tpu` (Mosaic: VMEM blocks of T steps, the carry
crossing chunks in a VMEM scratch) and `linear_scan_gpu` (Triton: each program
streams its whole segment, the carry in registers); `scan_planes` holds the
arithmetic they share. Selected by `backend=`; "*_interpret" runs the same kernel
in the Pallas interpreter on CPU (the tests).

GPU backend: Triton now, Mosaic GPU next. In jax 0.10 / 0.11 the Triton lowering
is what runs a `pl.pallas_call` grid kernel with masked pointer loads on Ampere and
newer; it is chosen by passing `pallas.triton.CompilerParams` (without them jax
0.10.2 lowers `pl.pallas_call` to Mosaic GPU and warns that this path is
deprecated in favour of `plgpu.kernel`). Triton is deprecated as of jax 0.11.0 but
still ships. Plan for the port (before the jax<0.12 pin is lifted), Hopper+ only:
  1. `plgpu.kernel` with a grid of (batch x P-block x segment) CTAs, one
     warpgroup each; the segment / XLA-combine / second-pass structure and the
     custom VJP of this module stay as they are (they are backend-neutral).
  2. Per CTA, an `emit_pipeline` over time tiles of (T=64..128 steps, Pb=128
     lanes): TMA copies GMEM->SMEM of b (and a when time-varying) for tile i+1
     are in flight while tile i is scanned, and the h tile goes SMEM->GMEM by TMA
     store. This replaces Triton's per-row masked loads (the "loads before
     compute" order becomes explicit double buffering).
  3. The scan inside a tile: each thread owns lanes of P and walks the T rows
     from SMEM with the float32 carry in registers (layout WGMMA-free; a plain
     `plgpu.Layout.WG_STRIDED` over the lane axis), complex numbers as two
     planes as today.
  4. Keep the Triton variant behind backend="gpu_triton" until the Mosaic one has
     matched it in `benchmarks/scan.py` on an H100 (correctness check included);
     then make "gpu" mean Mosaic.
Neither compiled variant has run on hardware yet: the tests run both in interpret
mode and check that they lower to Mosaic / Triton IR; `benchmarks/accelerator_check.sh`
runs them compiled on the first machine that has the hardware.

Chunk padding. When the segment length n is not a multiple of the chunk T, the
last chunk is partial. Its missing steps behave as padding with a = 1, b = 0
(implemented by a select that keeps the carry, so nothing is copied or
padded in memory): an identity step h -> 1 * h + 0 leaves the carry unchanged.
Going forward the padded steps come after every real step, so they can only
change outputs that are cut off; going backward (`reverse`) they are the first
steps of the walk and carry h0 unchanged into the last real step. P blocks past
the end of P are independent lanes, computed and discarded.

Time segments. The batch * P / Pb programs of one pass are few for short,
wide batches (8 x 256 / 128 = 16 programs for the benchmark shape: a GPU has
132 SMs). With `segments` S > 1 the sequence is cut into S segments that run
as separate programs: pass 1 computes each segment's final state from a zero
start and the product of its a's (no h is written); a tiny XLA scan over the
S segments turns these into every segment's entry state; pass 2 recomputes
the segments from those states and writes h. This reads b twice and writes h
once. S must divide L; the default is 1 on TPU and, on GPU, enough segments
for ~1024 programs, each at least 64 steps long.

Gradients (`jax.custom_vjp`). With g_t = dL/dh_t (total, through later steps)
and the incoming cotangent gbar_t:

    g_t   = gbar_t + a_{t+1} g_{t+1}        (a reverse scan; g_L = 0)
    db_t  = g_t
    da_t  = g_t * h_{t-1}                   (h_{-1} = h0, or 0)
    dh0   = a_0 * g_0

mirrored in time for `reverse`, with a_t = 0 at reset steps (so da_t = 0 there
and nothing flows past a reset). For complex inputs these are JAX's vjp
convention -- the transpose of the linear map, no conjugation -- so the results
equal `jax.vjp` / `jax.grad` of `linear_scan_reference` (the issue's "conj(a)"
is PyTorch's convention for the same quantity). Internally the kernel works on
real planes, where the transpose of "multiply by a" is "multiply by conj(a)";
the backward kernel therefore runs with the imaginary plane of a negated, and
JAX's own differentiation of the plane split/join converts back to its complex
convention. The backward scan is the same kernel run in the opposite direction
on gbar, in a "post-multiply" form, c <- A_t (c + gbar_t), g_t = c_old + gbar_t,
which reads a at the step's own index (no shifted copy of a) and leaves
dh0 = A_0 g_0 as its final carry. da = g * h_prev is one XLA fusion, summed
over the broadcast axes of a (time and/or batch) for a time-invariant a.

This module imports Pallas only when a kernel is built.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from pallas_kernels import linear_scan_gpu, linear_scan_tpu
from pallas_kernels.scan_planes import KernelSpec, to_complex, to_planes

BACKENDS = ("tpu", "gpu", "tpu_interpret", "gpu_interpret")

DEFAULT_CHUNK_SIZE = 1024  # TPU: time steps per VMEM block (amortizes the ~0.35 us per grid step)
DEFAULT_BLOCK_P = {"tpu": 1024, "gpu": 64}  # lanes per program
GPU_UNROLL = 8  # GPU: rows loaded per loop iteration
# Interpret mode runs the same loop with a shorter unroll: XLA's CPU compile time grows
# with it (8 rows: ~3 s per kernel), and the unroll/tail logic is exercised all the same.
GPU_UNROLL_INTERPRET = 2
GPU_TARGET_PROGRAMS = 1024  # GPU: programs the default `segments` aims for
# GPU: shortest segment the default `segments` makes. With 64 lanes per program, the
# benchmark shape (B 8, P 256, L 1k) gets 8 * 4 * 16 = 512 programs: ~3.9 per SM of a
# 132-SM H100 (>= 2, so one program's load latency hides behind another's work).
GPU_MIN_SEGMENT = 64

_SUPPORTED = (jnp.float32, jnp.bfloat16, jnp.float16, jnp.complex64)


# --------------------------------------------------------------------------
# Input handling shared by the kernel and the reference
# --------------------------------------------------------------------------


def _prepare(a, b, h0, reset):
    """Validates shapes, promotes dtypes; returns (a, b, h0 | None, keep | None, dtype).

    `keep` is float32 (batch, L): 0 at reset steps, 1 elsewhere.
    """
    b = jnp.asarray(b)
    a = jnp.asarray(a)
    if b.ndim != 3:
        raise ValueError(f"b must be (batch, L, P); got shape {b.shape}.")
    B, L, P = b.shape
    if a.ndim == 1:
        a = a.reshape(1, 1, -1)
    if a.ndim != 3 or a.shape[0] not in (1, B) or a.shape[1] not in (1, L) or a.shape[2] != P:
        raise ValueError(
            f"a must be (batch or 1, L or 1, P) = ({B} or 1, {L} or 1, {P}); got {a.shape}."
        )
    dtypes = [a.dtype, b.dtype] + ([jnp.asarray(h0).dtype] if h0 is not None else [])
    dtype = jnp.result_type(*dtypes)
    if not jnp.issubdtype(dtype, jnp.inexact):
        dtype = jnp.result_type(dtype, jnp.float32)
    a = a.astype(dtype)
    b = b.astype(dtype)
    if h0 is not None:
        h0 = jnp.asarray(h0, dtype)
        try:
            h0 = jnp.broadcast_to(h0, (B, P))
        except ValueError:
            raise ValueError(
                f"h0 must broadcast to (batch, P) = {(B, P)}; got {h0.shape}."
            ) from None
    keep = None
    if reset is not None:
        reset = jnp.asarray(reset, bool)
        try:
            reset = jnp.broadcast_to(reset, (B, L))
        except ValueError:
            raise ValueError(
                f"reset must broadcast to (batch, L) = {(B, L)}; got {reset.shape}."
            ) from None
        keep = jnp.where(reset, 0.0, 1.0).astype(jnp.float32)
    return a, b, h0, keep, jnp.dtype(dtype)


def linear_scan_reference(a, b, h0=None, *, reverse=False, reset=None):
    """Pure-JAX `lax.scan` with the semantics of `linear_scan` (carry float32 for 16-bit inputs)."""
    a, b, h0, keep, dtype = _prepare(a, b, h0, reset)
    carry_dtype = jnp.float32 if dtype.itemsize == 2 else dtype
    B, L, P = b.shape
    h_init = jnp.zeros((B, P), carry_dtype) if h0 is None else h0.astype(carry_dtype)
    b_t = jnp.swapaxes(b, 0, 1).astype(carry_dtype)
    const_a = a.shape[1] == 1
    a_t = a[:, 0].astype(carry_dtype) if const_a else jnp.swapaxes(a, 0, 1).astype(carry_dtype)
    k_t = None if keep is None else jnp.swapaxes(keep, 0, 1)[..., None].astype(carry_dtype)

    def step(h, xs):
        a_s = a_t if const_a else xs["a"]
        if k_t is not None:
            a_s = a_s * xs["k"]
        h = a_s * h + xs["b"]
        return h, h.astype(dtype)

    xs = {"b": b_t}
    if not const_a:
        xs["a"] = a_t
    if k_t is not None:
        xs["k"] = k_t
    _, h = lax.scan(step, h_init, xs, reverse=reverse)
    return jnp.swapaxes(h, 0, 1)


# --------------------------------------------------------------------------
# Planning: variant, block sizes, segments
# --------------------------------------------------------------------------


class _Plan(NamedTuple):
    variant: str  # "tpu" or "gpu"
    interpret: bool
    reverse: bool
    segments: int  # S, divides L
    chunk: int  # TPU: rows per block (T); GPU: unused
    rows: int  # TPU: rows per tile (R); GPU: rows per unrolled loop iteration
    block_p: int  # lanes per program (Pb)


def resolve_backend(backend: str | None = None) -> str:
    """The backend for `backend=None`: the platform on TPU and GPU, else "tpu_interpret"."""
    if backend is None:
        platform = jax.default_backend()
        return platform if platform in ("tpu", "gpu") else "tpu_interpret"
    if backend not in BACKENDS:
        raise ValueError(f"Unknown backend {backend!r}; expected None or one of {BACKENDS}.")
    return backend


def _largest_divisor_at_most(n: int, k: int) -> int:
    k = max(1, min(k, n))
    return max(d for d in range(1, k + 1) if n % d == 0)


def _plan(B, L, P, dtype, *, backend, reverse, chunk_size, block_p, segments) -> _Plan:
    backend = resolve_backend(backend)
    variant = backend.split("_")[0]
    interpret = backend.endswith("_interpret")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    block_p = DEFAULT_BLOCK_P[variant] if block_p is None else block_p
    if block_p < 1:
        raise ValueError(f"block_p must be >= 1, got {block_p}.")
    if variant == "tpu":
        # Whole (rows, 128) tiles per step; see linear_scan_tpu.block_rows.
        pb = linear_scan_tpu.block_rows(P, block_p, dtype) * linear_scan_tpu.LANES
        n_pb = -(-P // pb)
    else:
        # Triton tensors have power-of-two sizes; lanes past P are masked.
        pb = min(_next_power_of_2(block_p), _next_power_of_2(P))
        n_pb = -(-P // pb)
    if segments is None:
        if variant == "gpu":
            want = min(max(1, GPU_TARGET_PROGRAMS // (B * n_pb)), max(1, L // GPU_MIN_SEGMENT))
            segments = _largest_divisor_at_most(L, want)
        else:
            segments = 1
    elif segments < 1:
        raise ValueError(f"segments must be >= 1, got {segments}.")
    segments = _largest_divisor_at_most(L, segments)
    n = L // segments
    itemsize = jnp.dtype(dtype).itemsize // (2 if jnp.issubdtype(dtype, jnp.complexfloating) else 1)
    if variant == "tpu":
        rows = 16 if itemsize == 2 else 8  # the sublane tile (informational)
        chunk = min(chunk_size, n)  # the time axis is an untiled block dim: any length
    else:
        rows, chunk = (GPU_UNROLL_INTERPRET if interpret else GPU_UNROLL), n
    return _Plan(variant, interpret, bool(reverse), segments, chunk, rows, pb)


def _next_power_of_2(x: int) -> int:
    return 1 if x <= 1 else 1 << (x - 1).bit_length()


# --------------------------------------------------------------------------
# One kernel call
# --------------------------------------------------------------------------


def _kernel_call(
    plan: _Plan, a, b, h0, keep, *, reverse, post, conj, want_h, want_carry, want_prod
):
    """One pallas_call over all (batch, segment, P block[, L chunk]) programs.

    a: planes (Ba, S or 1, n or 1, P); b: planes (B, S, n, P); h0: float32 planes
    (B, S, 1, P) or None; keep: float32 (B, S, n) or None. Returns the requested
    outputs: h planes (B, S, n, P) in b's dtype, final carries and products of A
    as float32 planes (B, S, 1, P); None for those not requested.
    """
    B, S, n, P = b[0].shape
    k = len(b)
    spec = KernelSpec(
        n_planes=k,
        n=n,
        P=P,
        const_a=a[0].shape[2] == 1,
        has_h0=h0 is not None,
        has_keep=keep is not None,
        want_h=want_h,
        want_carry=want_carry,
        want_prod=want_prod,
        reverse=reverse,
        post=post,
        conj=conj,
    )
    f32 = jnp.float32
    outputs = {
        "h": (want_h, (B, S, n, P), b[0].dtype),
        "carry": (want_carry, (B, S, 1, P), f32),
        "prod": (want_prod, (B, S, 1, P), f32),
    }
    out_shape = [
        jax.ShapeDtypeStruct(shape, dt)
        for want, shape, dt in outputs.values()
        for _ in range(k if want else 0)
    ]
    kw = dict(Pb=plan.block_p, R=plan.rows, interpret=plan.interpret, out_shape=out_shape)
    if plan.variant == "tpu":
        outs = linear_scan_tpu.call_kernel(spec, a, b, h0, keep, T=plan.chunk, **kw)
    else:
        outs = linear_scan_gpu.call_kernel(spec, a, b, h0, keep, **kw)
    outs = iter(outs)
    h = tuple(next(outs) for _ in range(k)) if want_h else None
    carry = tuple(next(outs) for _ in range(k)) if want_carry else None
    prod = tuple(next(outs) for _ in range(k)) if want_prod else None
    return h, carry, prod


# --------------------------------------------------------------------------
# Segments: pass 1 (segment maps), XLA combine, pass 2 (outputs)
# --------------------------------------------------------------------------


def _run(plan: _Plan, a, b, h0, keep, *, reverse, post, conj, want_final):
    """Scans planes b (B, L, P) with a (Ba, 1 or L, P); returns (h planes, final carry or None).

    h0 are float32 planes (B, P) or None; the final carry (float32 planes (B, P))
    is the state after the last step processed.
    """
    B, L, P = b[0].shape
    S = plan.segments
    n = L // S
    b4 = tuple(x.reshape(B, S, n, P) for x in b)
    if a[0].shape[1] == 1:
        a4 = tuple(x.reshape(x.shape[0], 1, 1, P) for x in a)
    else:
        a4 = tuple(x.reshape(x.shape[0], S, n, P) for x in a)
    keep4 = None if keep is None else keep.reshape(B, S, n)
    kw = dict(reverse=reverse, post=post, conj=conj)

    def flat(planes, length):
        return tuple(x.reshape(B, length, P) for x in planes)

    if S == 1:
        h0_4 = None if h0 is None else tuple(x.reshape(B, 1, 1, P) for x in h0)
        h, carry, _ = _kernel_call(
            plan, a4, b4, h0_4, keep4, **kw, want_h=True, want_carry=want_final, want_prod=False
        )
        return flat(h, L), (None if carry is None else tuple(x.reshape(B, P) for x in carry))

    # Pass 1: each segment as an affine map of its entry state, c_out = prod * c_in + e.
    _, e, prod = _kernel_call(
        plan, a4, b4, None, keep4, **kw, want_h=False, want_carry=True, want_prod=True
    )
    e, prod = to_complex(e)[:, :, 0], to_complex(prod)[:, :, 0]  # (B, S, P)
    c0 = jnp.zeros((B, P), e.dtype) if h0 is None else to_complex(h0).astype(e.dtype)

    def step(c, xs):
        p, e_s = xs
        return p * c + e_s, c

    final, entries = lax.scan(
        step, c0, (jnp.moveaxis(prod, 1, 0), jnp.moveaxis(e, 1, 0)), reverse=reverse
    )
    entries = to_planes(jnp.moveaxis(entries, 0, 1)[:, :, None], len(b))  # (B, S, 1, P)
    # Pass 2: every segment from its entry state.
    h, _, _ = _kernel_call(
        plan, a4, b4, entries, keep4, **kw, want_h=True, want_carry=False, want_prod=False
    )
    return flat(h, L), (to_planes(final, len(b)) if want_final else None)


# --------------------------------------------------------------------------
# Autodiff
# --------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _scan_planes(plan: _Plan, a, b, h0, keep):
    h, _ = _run(
        plan, a, b, h0, keep, reverse=plan.reverse, post=False, conj=False, want_final=False
    )
    return h


def _scan_planes_fwd(plan, a, b, h0, keep):
    h = _scan_planes(plan, a, b, h0, keep)
    return h, (a, h0, keep, h)


def _scan_planes_bwd(plan, res, g_bar):
    a, h0, keep, h = res
    # g_t = gbar_t + conj(A_{t+1}) g_{t+1} (on planes), run the other way; dh0 is the final carry.
    g, dh0 = _run(
        plan,
        a,
        tuple(g_bar),
        None,
        keep,
        reverse=not plan.reverse,
        post=True,
        conj=True,
        want_final=h0 is not None,
    )
    B, L, P = h[0].shape
    f32 = jnp.float32
    if h0 is None:
        first = tuple(jnp.zeros((B, 1, P), f32) for _ in h)
    else:
        first = tuple(x[:, None] for x in h0)
    # h_prev: the state each step starts from, in the direction of the scan.
    if plan.reverse:
        h_prev = tuple(jnp.concatenate([x[:, 1:].astype(f32), f], 1) for x, f in zip(h, first))
    else:
        h_prev = tuple(jnp.concatenate([f, x[:, :-1].astype(f32)], 1) for x, f in zip(h, first))
    gf = tuple(x.astype(f32) for x in g)
    if len(h) == 1:
        da = (gf[0] * h_prev[0],)
    else:  # g * conj(h_prev) on planes: the real transpose of a -> a * h_prev
        (gr, gi), (hr, hi) = gf, h_prev
        da = (gr * hr + gi * hi, gi * hr - gr * hi)
    if keep is not None:
        da = tuple(x * keep[..., None] for x in da)
    axes = tuple(ax for ax in (0, 1) if a[0].shape[ax] == 1 and da[0].shape[ax] != 1)
    if axes:
        da = tuple(jnp.sum(x, axis=axes, keepdims=True) for x in da)
    da = tuple(x.astype(y.dtype) for x, y in zip(da, a))
    db = tuple(x.astype(y.dtype) for x, y in zip(g, g_bar))
    dkeep = None if keep is None else jnp.zeros_like(keep)
    return da, db, dh0, dkeep


_scan_planes.defvjp(_scan_planes_fwd, _scan_planes_bwd)


# --------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------


def linear_scan(
    a,
    b,
    h0=None,
    *,
    reverse: bool = False,
    reset=None,
    backend: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    block_p: int | None = None,
    segments: int | None = None,
) -> jax.Array:
    """h_t = a_t * h_{t-1} + b_t over axis 1 of b (batch, L, P), by a Pallas kernel.

    Args:
      a: (batch or 1, L, P) multipliers, or (batch or 1, 1, P) / (P,) for one
        multiplier per lane for all steps (not broadcast in memory).
      b: (batch, L, P) inputs; real (float32, bfloat16, float16) or complex64.
      h0: (batch, P) state before the first step (beyond the last when
        `reverse`); zeros when None.
      reverse: run from the end, h_t = a_t * h_{t+1} + b_t.
      reset: (batch, L) bool; where True the recurrence restarts, h_t = b_t.
      backend: None (by `jax.default_backend()`: "tpu", "gpu", otherwise
        "tpu_interpret"), or one of "tpu", "gpu", "tpu_interpret", "gpu_interpret".
      chunk_size: TPU variant: time steps per VMEM block (default 1024; capped at
        the segment length). The GPU variant streams rows and ignores it.
      block_p: lanes per program. TPU: all of P (rounded up to 128) when that is
        at most max(block_p, 8 x 128 (16 x 128 for 16-bit dtypes)), else a multiple
        of that tile (default 1024). GPU: a power of two (rounded up; default 64),
        lanes past P masked.
      segments: number of time segments run as separate programs (two passes
        when > 1; see the module docstring). Rounded down to a divisor of L.
        Default: 1 on TPU; on GPU enough for ~1024 programs of >= 64 steps.

    Returns:
      h, shaped like b, in the common dtype of a, b and h0.
    """
    a, b, h0, keep, dtype = _prepare(a, b, h0, reset)
    if not any(dtype == jnp.dtype(d) for d in _SUPPORTED):
        raise TypeError(
            f"linear_scan supports float32, bfloat16, float16 and complex64; got {dtype}."
        )
    B, L, P = b.shape
    plan = _plan(
        B,
        L,
        P,
        dtype,
        backend=backend,
        reverse=reverse,
        chunk_size=chunk_size,
        block_p=block_p,
        segments=segments,
    )
    n_planes = 2 if jnp.issubdtype(dtype, jnp.complexfloating) else 1
    a_pl = to_planes(a, n_planes)
    b_pl = to_planes(b, n_planes)
    h0_pl = None if h0 is None else tuple(x.astype(jnp.float32) for x in to_planes(h0, n_planes))
    h = _scan_planes(plan, a_pl, b_pl, h0_pl, keep)
    return to_complex(h).astype(dtype)


__all__ = ["BACKENDS", "linear_scan", "linear_scan_reference", "resolve_backend"]
