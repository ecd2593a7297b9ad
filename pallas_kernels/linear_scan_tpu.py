"""TPU (Mosaic) variant of the linear-scan kernel; see `pallas_kernels.linear_scan`.

Layout: the P lanes are viewed as (P / 128, 128) -- a free reshape after padding P
to a multiple of 128 (a copy only when it is not one) -- so that one time step of a
block is a whole (rows, 128) vreg tile: with P >= 1024 (2048 for 16-bit dtypes)
every step fills all 8 (16) sublanes; smaller P fill P / 128 of them. The time axis
is the leading, untiled block dim, so the kernel reads step t as `ref[t]` (no
sublane extraction) and writes h the same way.

Grid (batch, segment, lane block, L chunk). Blocks are (T, rows, 128) with T time
steps (default 1024) and rows = all of P / 128 up to the sublane tile, else a
multiple of it. The last grid axis walks the chunks in order ("arbitrary"; the
others "parallel") and the float32 carry crosses chunks in a VMEM scratch buffer
(re)initialized with `pl.when` at chunk 0. Inside a chunk a `fori_loop` (unrolled
by UNROLL when compiled) steps through the T rows with the carry in vregs.
`reverse` reads the chunks from the end through the index_map and walks the rows
backwards. VMEM: the pipeline double-buffers every streamed block, so the limit
passed to Mosaic is 2 x the blocks + the scratch + a margin (1024 steps x 8 x 128
float32 = 4 MiB per streamed array; ~32 MiB for the complex S5 case; fits v5e /
v5p / v6e VMEM, not v4's 32 MiB with time-varying complex a -- pass chunk_size=512).

Imports Pallas only when a kernel is built.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from pallas_kernels.scan_planes import KernelSpec, select, step, unpack_refs

LANES = 128
UNROLL = 8  # compiled: steps per loop iteration (independent loads of later steps overlap)
VMEM_MARGIN = 8 << 20


def sublane_tile(dtype) -> int:
    """Rows of a vreg tile for this dtype: 8 for 32-bit, 16 for 16-bit."""
    return 16 if jnp.dtype(dtype).itemsize == 2 else 8


def block_rows(P: int, block_p: int, dtype) -> int:
    """Rows (of 128 lanes) per block: all of P / 128 when that is at most
    max(tile, block_p / 128), else a multiple of the sublane tile."""
    tile = sublane_tile(dtype)
    rows = -(-P // LANES)
    want = max(tile, block_p // LANES)
    return rows if rows <= want else max(tile, want // tile * tile)


def _tpu_kernel(*refs, s: KernelSpec, T: int, unroll: int):
    from jax.experimental import pallas as pl

    a_refs, b_refs, h0_refs, keep_ref, h_refs, carry_refs, prod_refs, scratch = unpack_refs(refs, s)
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
    n_valid = s.n - chunk * T  # steps of this chunk inside the segment (>= T except the last)
    masked = s.n % T != 0

    def one_step(k, state):
        h, prod = state
        t = (T - 1 - k) if s.reverse else k
        # Loads first: they do not depend on the carry.
        a_row = a_const if s.const_a else tuple(r[t].astype(f32) for r in a_refs)
        b_row = tuple(r[t].astype(f32) for r in b_refs)
        k_row = keep_ref[t] if s.has_keep else None  # (1, 1), broadcast over the tile
        h_new, out, prod_new = step(h, prod, a_row, b_row, k_row, post=s.post, conj=s.conj)
        if masked:  # steps past the segment end act as a = 1, b = 0
            valid = t < n_valid
            h_new, prod_new = select(valid, h_new, h), select(valid, prod_new, prod)
        if s.want_h:
            for r, x in zip(h_refs, out):
                r[t] = x.astype(r.dtype)
        return h_new, prod_new

    h = tuple(r[...] for r in h_scr)
    prod = tuple(r[...] for r in prod_scr) if s.want_prod else None
    h, prod = lax.fori_loop(0, T, one_step, (h, prod), unroll=min(unroll, T))
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


def _to_tiles(x, P_pad: int):
    """(..., P) -> (..., P_pad / 128, 128), padding lanes with zeros."""
    if x.shape[-1] != P_pad:
        x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, P_pad - x.shape[-1])])
    return x.reshape(*x.shape[:-1], P_pad // LANES, LANES)


def call_kernel(spec: KernelSpec, a, b, h0, keep, *, Pb, T, R, interpret, out_shape):
    """Runs the kernel over the grid (batch, segment, lane block, L chunk); returns its outputs.

    a: planes (Ba, S or 1, n or 1, P); b: planes (B, S, n, P); h0: float32 planes
    (B, S, 1, P) or None; keep: float32 (B, S, n) or None. Pb: lanes per block (a
    multiple of 128, from `block_rows`). Outputs as described by `out_shape`
    (shapes ending in P).
    """
    del R  # the GPU variant's unroll; here one step is a whole tile
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import tpu as pltpu

    B, S, n, P = b[0].shape
    rows = Pb // LANES
    P_pad = -(-P // Pb) * Pb
    n_pb = P_pad // Pb
    n_chunks = -(-n // T)
    a_batch = (lambda i: i) if a[0].shape[0] > 1 else (lambda i: 0)
    chunk = (lambda c: n_chunks - 1 - c) if spec.reverse else (lambda c: c)
    step_block = pl.BlockSpec(
        (None, None, T, rows, LANES), lambda i, s, p, c: (i, s, chunk(c), p, 0)
    )
    lane_block = pl.BlockSpec((None, None, None, rows, LANES), lambda i, s, p, c: (i, s, 0, p, 0))
    if spec.const_a:
        a_spec = pl.BlockSpec(
            (None, None, None, rows, LANES), lambda i, s, p, c: (a_batch(i), 0, 0, p, 0)
        )
    else:
        a_spec = pl.BlockSpec(
            (None, None, T, rows, LANES), lambda i, s, p, c: (a_batch(i), s, chunk(c), p, 0)
        )
    tiles = lambda planes: [_to_tiles(x, P_pad) for x in planes]
    inputs = tiles(a) + tiles(b)
    in_specs = [a_spec] * len(a) + [step_block] * len(b)
    if h0 is not None:
        inputs += tiles(h0)
        in_specs += [lane_block] * len(h0)
    if keep is not None:
        inputs.append(keep[..., None, None])
        in_specs.append(
            pl.BlockSpec((None, None, T, 1, 1), lambda i, s, p, c: (i, s, chunk(c), 0, 0))
        )
    k = spec.n_planes
    out_specs = [step_block] * (k if spec.want_h else 0)
    out_specs += [lane_block] * (k * (int(spec.want_carry) + int(spec.want_prod)))
    tiled_shape = [
        jax.ShapeDtypeStruct((*o.shape[:-1], P_pad // LANES, LANES), o.dtype) for o in out_shape
    ]
    scratch = [pltpu.VMEM((rows, LANES), jnp.float32)] * (k * (1 + int(spec.want_prod)))
    per_step = (step_block,) if spec.const_a else (step_block, a_spec)
    streamed = [x for x, sp in zip(inputs, in_specs) if any(sp is q for q in per_step)]
    streamed += [o for o, sp in zip(tiled_shape, out_specs) if sp is step_block]
    block_bytes = sum(T * Pb * jnp.dtype(x.dtype).itemsize for x in streamed)
    call = pl.pallas_call(
        functools.partial(_tpu_kernel, s=spec, T=T, unroll=1 if interpret else UNROLL),
        out_shape=tiled_shape,
        grid=(B, S, n_pb, n_chunks),
        in_specs=in_specs,
        out_specs=out_specs,
        scratch_shapes=scratch,
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel", "parallel", "parallel", "arbitrary"),
            vmem_limit_bytes=2 * block_bytes + VMEM_MARGIN,
        ),
        interpret=interpret,
        name="linear_scan_tpu",
    )
    outs = call(*inputs)
    return [o.reshape(*o.shape[:-2], P_pad)[..., :P] for o in outs]
