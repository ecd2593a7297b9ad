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

Kernel structure. The grid runs over (batch, time segment, P block[, L chunk]).

- TPU variant (Mosaic): blocks (T, Pb) of b / a / h with Pb a multiple of 128
  (or all of P), T a multiple of the sublane tile (8 rows, 16 for 16-bit
  dtypes). The last grid axis walks the L chunks in order ("arbitrary"
  semantics; the others are "parallel") and the float32 carry crosses chunks
  in a VMEM scratch buffer that is (re)initialized with `pl.when` at chunk 0.
  Inside a chunk a `fori_loop` walks tiles of 8 (16) rows; each tile is loaded
  once and its rows are stepped through in registers. `reverse` reads the
  chunks from the end through the index_map and walks tiles and rows
  backwards.
- GPU variant (Triton: `pl.pallas_call` with `jax.experimental.pallas.triton.CompilerParams`):
  grid (batch, segment, P block) with P blocks of a power-of-two width and
  lane masks where P is not a multiple of it; each program streams its whole
  segment row by row, 8 rows per loop iteration unrolled so that their loads
  are in flight together. The carry lives in registers.

  Why Triton: in the jax versions this project supports (0.10 / 0.11) the
  Triton lowering is what runs a `pl.pallas_call` grid kernel like this one on
  an H100: masked `load`/`store` on pointers, registers for the carry,
  Ampere and newer. It is selected by passing Triton `CompilerParams`; without
  them jax 0.10.2 lowers `pl.pallas_call` on GPU to Mosaic GPU and warns that
  `pl.pallas_call` for Mosaic GPU is deprecated in favour of `plgpu.kernel`.
  A Mosaic GPU version (Hopper only; warpgroup layouts, explicit SMEM
  pipelining) is a separate kernel, worth writing once this one has been
  measured. The Triton backend is deprecated as of jax 0.11.0 ("will be
  removed in a future version") but still ships in it; the GPU variant must
  move to Mosaic GPU (or jax-triton) before the jax<0.12 pin is lifted.

  Neither compiled variant has run on hardware yet: the tests run both in
  interpret mode and check that they lower to Mosaic / Triton IR.

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
for ~1024 programs, each at least 256 steps long.

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

BACKENDS = ("tpu", "gpu", "tpu_interpret", "gpu_interpret")

DEFAULT_CHUNK_SIZE = 256  # TPU: time steps per VMEM block
DEFAULT_BLOCK_P = {"tpu": 512, "gpu": 128}  # lanes per program
GPU_UNROLL = 8  # GPU: rows loaded per loop iteration
# Interpret mode runs the same loop with a shorter unroll: XLA's CPU compile time grows
# with it (8 rows: ~3 s per kernel), and the unroll/tail logic is exercised all the same.
GPU_UNROLL_INTERPRET = 2
GPU_TARGET_PROGRAMS = 1024  # GPU: programs the default `segments` aims for
GPU_MIN_SEGMENT = 256  # GPU: shortest segment the default `segments` makes

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


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


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
        # Lane blocks are multiples of 128, or all of P (always a legal block).
        pb = _round_up(block_p, 128)
        pb = P if P <= pb else pb
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
        rows = 16 if itemsize == 2 else 8  # the sublane tile of 16-bit / 32-bit dtypes
        chunk = _round_up(min(chunk_size, n), rows)
    else:
        rows, chunk = (GPU_UNROLL_INTERPRET if interpret else GPU_UNROLL), n
    return _Plan(variant, interpret, bool(reverse), segments, chunk, rows, pb)


def _next_power_of_2(x: int) -> int:
    return 1 if x <= 1 else 1 << (x - 1).bit_length()


# --------------------------------------------------------------------------
# Complex arithmetic on planes: a value is a tuple (re,) or (re, im)
# --------------------------------------------------------------------------


def _mul(x, y):
    if len(x) == 1:
        return (x[0] * y[0],)
    (xr, xi), (yr, yi) = x, y
    return (xr * yr - xi * yi, xr * yi + xi * yr)


def _add(x, y):
    return tuple(u + v for u, v in zip(x, y))


def _step(h, prod, a_row, b_row, k_row, *, post, conj):
    """One step on planes: returns (new carry, output row, new product of A)."""
    if conj and len(a_row) == 2:
        a_row = (a_row[0], -a_row[1])
    if k_row is not None:
        a_row = tuple(x * k_row for x in a_row)
    if post:  # backward form: out = c + x, c <- A out
        out = _add(h, b_row)
        h_new = _mul(a_row, out)
    else:  # h <- A h + b, out = h
        h_new = _add(_mul(a_row, h), b_row)
        out = h_new
    prod_new = None if prod is None else _mul(a_row, prod)
    return h_new, out, prod_new


def _select(valid, new, old):
    if old is None:
        return None
    return tuple(jnp.where(valid, x, y) for x, y in zip(new, old))


# --------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------


class _Spec(NamedTuple):
    """Static description of one kernel call (hashable, closed over by the kernel)."""

    n_planes: int
    n: int  # steps per segment
    P: int
    const_a: bool
    has_h0: bool
    has_keep: bool
    want_h: bool
    want_carry: bool
    want_prod: bool
    reverse: bool
    post: bool
    conj: bool


def _unpack_refs(refs, s: _Spec):
    it = iter(refs)
    take = lambda k: tuple(next(it) for _ in range(k))
    a = take(s.n_planes)
    b = take(s.n_planes)
    h0 = take(s.n_planes) if s.has_h0 else None
    keep = next(it) if s.has_keep else None
    h_out = take(s.n_planes) if s.want_h else None
    carry_out = take(s.n_planes) if s.want_carry else None
    prod_out = take(s.n_planes) if s.want_prod else None
    rest = tuple(it)
    return a, b, h0, keep, h_out, carry_out, prod_out, rest


def _tpu_kernel(*refs, s: _Spec, T: int, R: int):
    from jax.experimental import pallas as pl

    a_refs, b_refs, h0_refs, keep_ref, h_refs, carry_refs, prod_refs, scratch = _unpack_refs(
        refs, s
    )
    h_scr = scratch[: s.n_planes]
    prod_scr = scratch[s.n_planes :] if s.want_prod else None
    f32 = jnp.float32
    n_chunks = -(-s.n // T)
    c = pl.program_id(3)
    chunk = (n_chunks - 1 - c) if s.reverse else c

    @pl.when(c == 0)
    def _init():
        for k in range(s.n_planes):
            h_scr[k][...] = h0_refs[k][...] if s.has_h0 else jnp.zeros(h_scr[k].shape, f32)
        if s.want_prod:
            prod_scr[0][...] = jnp.ones(prod_scr[0].shape, f32)
            for k in range(1, s.n_planes):
                prod_scr[k][...] = jnp.zeros(prod_scr[k].shape, f32)

    a_const = tuple(r[...].astype(f32) for r in a_refs) if s.const_a else None
    n_valid = s.n - chunk * T  # rows of this chunk inside the segment (>= T except the last)
    masked = s.n % T != 0
    n_tiles = T // R

    def tile(i, state):
        h, prod = state
        g = (n_tiles - 1 - i) if s.reverse else i
        base = pl.multiple_of(g * R, R)
        rows = pl.ds(base, R)
        b_tile = tuple(r[rows, :].astype(f32) for r in b_refs)
        a_tile = None if s.const_a else tuple(r[rows, :].astype(f32) for r in a_refs)
        k_tile = keep_ref[rows, :] if s.has_keep else None
        acc = [jnp.zeros_like(x) for x in b_tile] if s.want_h else None
        row_id = lax.broadcasted_iota(jnp.int32, b_tile[0].shape, 0)
        for jj in range(R):
            j = R - 1 - jj if s.reverse else jj
            a_row = a_const if s.const_a else tuple(x[j : j + 1, :] for x in a_tile)
            b_row = tuple(x[j : j + 1, :] for x in b_tile)
            k_row = None if k_tile is None else k_tile[j : j + 1, :]
            h_new, out, prod_new = _step(h, prod, a_row, b_row, k_row, post=s.post, conj=s.conj)
            if masked:  # rows past the segment end act as a = 1, b = 0
                valid = base + j < n_valid
                h_new, prod_new = _select(valid, h_new, h), _select(valid, prod_new, prod)
            h, prod = h_new, prod_new
            if s.want_h:
                acc = [jnp.where(row_id == j, o, x) for o, x in zip(out, acc)]
        if s.want_h:
            for r, x in zip(h_refs, acc):
                r[rows, :] = x.astype(r.dtype)
        return h, prod

    h = tuple(r[...] for r in h_scr)
    prod = tuple(r[...] for r in prod_scr) if s.want_prod else None
    h, prod = lax.fori_loop(0, n_tiles, tile, (h, prod))
    for r, x in zip(h_scr, h):
        r[...] = x
    if s.want_prod:
        for r, x in zip(prod_scr, prod):
            r[...] = x
    if s.want_carry:
        for r, x in zip(carry_refs, h):
            r[...] = x
    if s.want_prod:
        for r, x in zip(prod_refs, prod):
            r[...] = x


def _gpu_kernel(*refs, s: _Spec, Pb: int, R: int):
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as pltriton

    a_refs, b_refs, h0_refs, keep_ref, h_refs, carry_refs, prod_refs, _ = _unpack_refs(refs, s)
    f32 = jnp.float32
    mask = None
    if s.P % Pb:
        mask = pl.program_id(2) * Pb + lax.broadcasted_iota(jnp.int32, (Pb,), 0) < s.P

    def load(ref, t=None, other=0.0):
        if mask is None:
            x = ref[...] if t is None else ref[t, :]
        else:
            x = pltriton.load(ref if t is None else ref.at[t, :], mask=mask, other=other)
        return x.astype(f32)

    def store(ref, x, t=None):
        x = x.astype(ref.dtype)
        if mask is None:
            if t is None:
                ref[...] = x
            else:
                ref[t, :] = x
        else:
            pltriton.store(ref if t is None else ref.at[t, :], x, mask=mask)

    a_const = tuple(load(r, other=1.0) for r in a_refs) if s.const_a else None

    def one_step(k, state):
        h, prod = state
        t = jnp.asarray(s.n - 1 - k if s.reverse else k, jnp.int32)
        a_row = a_const if s.const_a else tuple(load(r, t, other=1.0) for r in a_refs)
        b_row = tuple(load(r, t) for r in b_refs)
        k_row = keep_ref[t] if s.has_keep else None
        h, out, prod = _step(h, prod, a_row, b_row, k_row, post=s.post, conj=s.conj)
        if s.want_h:
            for r, x in zip(h_refs, out):
                store(r, x, t)
        return h, prod

    def tile(i, state):
        for j in range(R):  # unrolled: the R rows' loads do not depend on the carry
            state = one_step(i * R + j, state)
        return state

    zeros = jnp.zeros((Pb,), f32)
    h = tuple(load(r) for r in h0_refs) if s.has_h0 else (zeros,) * s.n_planes
    prod = ((zeros + 1.0,) + (zeros,) * (s.n_planes - 1)) if s.want_prod else None
    n_tiles, tail = divmod(s.n, R)
    state = lax.fori_loop(0, n_tiles, tile, (h, prod))
    for j in range(tail):
        state = one_step(n_tiles * R + j, state)
    h, prod = state
    if s.want_carry:
        for r, x in zip(carry_refs, h):
            store(r, x)
    if s.want_prod:
        for r, x in zip(prod_refs, prod):
            store(r, x)


def _kernel_call(
    plan: _Plan, a, b, h0, keep, *, reverse, post, conj, want_h, want_carry, want_prod
):
    """One pallas_call over all (batch, segment, P block) programs.

    a: planes (Ba, S or 1, n or 1, P); b: planes (B, S, n, P); h0: float32 planes
    (B, S, 1, P) or None; keep: float32 (B, S, n) or None. Returns the requested
    outputs: h planes (B, S, n, P) in b's dtype, final carries and products of A
    as float32 planes (B, S, 1, P); None for those not requested.
    """
    from jax.experimental import pallas as pl

    B, S, n, P = b[0].shape
    Ba = a[0].shape[0]
    const_a = a[0].shape[2] == 1
    spec = _Spec(
        n_planes=len(b),
        n=n,
        P=P,
        const_a=const_a,
        has_h0=h0 is not None,
        has_keep=keep is not None,
        want_h=want_h,
        want_carry=want_carry,
        want_prod=want_prod,
        reverse=reverse,
        post=post,
        conj=conj,
    )
    Pb = plan.block_p
    n_pb = -(-P // Pb)
    f32 = jnp.float32
    out_dtype = b[0].dtype
    n_out = {
        "h": (want_h, (B, S, n, P), out_dtype),
        "carry": (want_carry, (B, S, 1, P), f32),
        "prod": (want_prod, (B, S, 1, P), f32),
    }
    out_shape = [
        jax.ShapeDtypeStruct(shape, dt)
        for want, shape, dt in n_out.values()
        for _ in range(len(b) if want else 0)
    ]
    a_batch = (lambda i: i) if Ba > 1 else (lambda i: 0)
    inputs = list(a) + list(b) + (list(h0) if h0 is not None else [])

    if plan.variant == "tpu":
        from jax.experimental.pallas import tpu as pltpu

        T, R = plan.chunk, plan.rows
        n_chunks = -(-n // T)
        chunk = (lambda c: n_chunks - 1 - c) if reverse else (lambda c: c)
        row_block = pl.BlockSpec((None, None, T, Pb), lambda i, s, p, c: (i, s, chunk(c), p))
        lane_block = pl.BlockSpec((None, None, 1, Pb), lambda i, s, p, c: (i, s, 0, p))
        if const_a:
            a_spec = pl.BlockSpec((None, None, 1, Pb), lambda i, s, p, c: (a_batch(i), 0, 0, p))
        else:
            a_spec = pl.BlockSpec(
                (None, None, T, Pb), lambda i, s, p, c: (a_batch(i), s, chunk(c), p)
            )
        in_specs = [a_spec] * len(a) + [row_block] * len(b)
        in_specs += [lane_block] * (len(h0) if h0 is not None else 0)
        if keep is not None:
            in_specs.append(
                pl.BlockSpec((None, None, T, 1), lambda i, s, p, c: (i, s, chunk(c), 0))
            )
            inputs.append(keep[..., None])
        out_specs = [row_block] * (len(b) if want_h else 0)
        out_specs += [lane_block] * (len(b) * (int(want_carry) + int(want_prod)))
        scratch = [pltpu.VMEM((1, Pb), f32)] * (len(b) * (1 + int(want_prod)))
        call = pl.pallas_call(
            functools.partial(_tpu_kernel, s=spec, T=T, R=R),
            out_shape=out_shape,
            grid=(B, S, n_pb, n_chunks),
            in_specs=in_specs,
            out_specs=out_specs,
            scratch_shapes=scratch,
            compiler_params=pltpu.CompilerParams(
                dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")
            ),
            interpret=plan.interpret,
            name="linear_scan_tpu",
        )
    else:
        from jax.experimental.pallas import triton as pltriton

        seq_block = pl.BlockSpec((None, None, n, Pb), lambda i, s, p: (i, s, 0, p))
        lane_block = pl.BlockSpec((None, None, None, Pb), lambda i, s, p: (i, s, 0, p))
        if const_a:
            a_spec = pl.BlockSpec((None, None, None, Pb), lambda i, s, p: (a_batch(i), 0, 0, p))
        else:
            a_spec = pl.BlockSpec((None, None, n, Pb), lambda i, s, p: (a_batch(i), s, 0, p))
        in_specs = [a_spec] * len(a) + [seq_block] * len(b)
        in_specs += [lane_block] * (len(h0) if h0 is not None else 0)
        if keep is not None:
            in_specs.append(pl.BlockSpec((None, None, n), lambda i, s, p: (i, s, 0)))
            inputs.append(keep)
        out_specs = [seq_block] * (len(b) if want_h else 0)
        out_specs += [lane_block] * (len(b) * (int(want_carry) + int(want_prod)))
        call = pl.pallas_call(
            functools.partial(_gpu_kernel, s=spec, Pb=Pb, R=plan.rows),
            out_shape=out_shape,
            grid=(B, S, n_pb),
            in_specs=in_specs,
            out_specs=out_specs,
            compiler_params=pltriton.CompilerParams(num_warps=max(1, min(8, Pb // 32))),
            interpret=plan.interpret,
            name="linear_scan_gpu",
        )

    outs = iter(call(*inputs))
    k = len(b)
    h = tuple(next(outs) for _ in range(k)) if want_h else None
    carry = tuple(next(outs) for _ in range(k)) if want_carry else None
    prod = tuple(next(outs) for _ in range(k)) if want_prod else None
    return h, carry, prod


# --------------------------------------------------------------------------
# Segments: pass 1 (segment maps), XLA combine, pass 2 (outputs)
# --------------------------------------------------------------------------


def _to_complex(planes):
    return planes[0] if len(planes) == 1 else lax.complex(planes[0], planes[1])


def _to_planes(x, n_planes):
    return (x,) if n_planes == 1 else (jnp.real(x), jnp.imag(x))


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
    e, prod = _to_complex(e)[:, :, 0], _to_complex(prod)[:, :, 0]  # (B, S, P)
    c0 = jnp.zeros((B, P), e.dtype) if h0 is None else _to_complex(h0).astype(e.dtype)

    def step(c, xs):
        p, e_s = xs
        return p * c + e_s, c

    final, entries = lax.scan(
        step, c0, (jnp.moveaxis(prod, 1, 0), jnp.moveaxis(e, 1, 0)), reverse=reverse
    )
    entries = _to_planes(jnp.moveaxis(entries, 0, 1)[:, :, None], len(b))  # (B, S, 1, P)
    # Pass 2: every segment from its entry state.
    h, _, _ = _kernel_call(
        plan, a4, b4, entries, keep4, **kw, want_h=True, want_carry=False, want_prod=False
    )
    return flat(h, L), (_to_planes(final, len(b)) if want_final else None)


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
      chunk_size: TPU variant: time steps per VMEM block (rounded up to a
        multiple of 8, or 16 for 16-bit dtypes). The GPU variant streams rows
        and ignores it.
      block_p: lanes per program. TPU: a multiple of 128 (rounded up), or all of
        P when P is not larger (default 512). GPU: a power of two (rounded up;
        default 128), lanes past P masked.
      segments: number of time segments run as separate programs (two passes
        when > 1; see the module docstring). Rounded down to a divisor of L.
        Default: 1 on TPU; on GPU enough for ~1024 programs of >= 256 steps.

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
    a_pl = _to_planes(a, n_planes)
    b_pl = _to_planes(b, n_planes)
    h0_pl = None if h0 is None else tuple(x.astype(jnp.float32) for x in _to_planes(h0, n_planes))
    h = _scan_planes(plan, a_pl, b_pl, h0_pl, keep)
    return _to_complex(h).astype(dtype)


__all__ = ["BACKENDS", "linear_scan", "linear_scan_reference", "resolve_backend"]
