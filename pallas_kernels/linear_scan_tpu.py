"""TPU (Mosaic) variant of the linear-scan kernel; see `pallas_kernels.linear_scan`.

Blocks (T, Pb) of b / a / h with Pb a multiple of 128 (or all of P) and T a multiple
of the sublane tile (8 rows, 16 for 16-bit dtypes). The last grid axis walks the L
chunks in order ("arbitrary"; the others are "parallel") and the float32 carry crosses
chunks in a VMEM scratch buffer, (re)initialized with `pl.when` at chunk 0. Inside a
chunk a `fori_loop` walks tiles of R rows; each tile is loaded once and its rows are
stepped through in registers. `reverse` reads the chunks from the end through the
index_map and walks tiles and rows backwards.

Imports Pallas only when a kernel is built.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
from jax import lax

from pallas_kernels.scan_planes import KernelSpec, select, step, unpack_refs


def _tpu_kernel(*refs, s: KernelSpec, T: int, R: int):
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
            h_new, out, prod_new = step(h, prod, a_row, b_row, k_row, post=s.post, conj=s.conj)
            if masked:  # rows past the segment end act as a = 1, b = 0
                valid = base + j < n_valid
                h_new, prod_new = select(valid, h_new, h), select(valid, prod_new, prod)
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


def call_kernel(spec: KernelSpec, a, b, h0, keep, *, Pb, T, R, interpret, out_shape):
    """Runs the kernel over the grid (batch, segment, P block, L chunk); returns its outputs.

    a: planes (Ba, S or 1, n or 1, P); b: planes (B, S, n, P); h0: float32 planes
    (B, S, 1, P) or None; keep: float32 (B, S, n) or None.
    """
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import tpu as pltpu

    B, S, n, P = b[0].shape
    n_pb = -(-P // Pb)
    n_chunks = -(-n // T)
    a_batch = (lambda i: i) if a[0].shape[0] > 1 else (lambda i: 0)
    chunk = (lambda c: n_chunks - 1 - c) if spec.reverse else (lambda c: c)
    row_block = pl.BlockSpec((None, None, T, Pb), lambda i, s, p, c: (i, s, chunk(c), p))
    lane_block = pl.BlockSpec((None, None, 1, Pb), lambda i, s, p, c: (i, s, 0, p))
    if spec.const_a:
        a_spec = pl.BlockSpec((None, None, 1, Pb), lambda i, s, p, c: (a_batch(i), 0, 0, p))
    else:
        a_spec = pl.BlockSpec((None, None, T, Pb), lambda i, s, p, c: (a_batch(i), s, chunk(c), p))
    inputs = list(a) + list(b)
    in_specs = [a_spec] * len(a) + [row_block] * len(b)
    if h0 is not None:
        inputs += list(h0)
        in_specs += [lane_block] * len(h0)
    if keep is not None:
        inputs.append(keep[..., None])
        in_specs.append(pl.BlockSpec((None, None, T, 1), lambda i, s, p, c: (i, s, chunk(c), 0)))
    k = spec.n_planes
    out_specs = [row_block] * (k if spec.want_h else 0)
    out_specs += [lane_block] * (k * (int(spec.want_carry) + int(spec.want_prod)))
    scratch = [pltpu.VMEM((1, Pb), jnp.float32)] * (k * (1 + int(spec.want_prod)))
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
        interpret=interpret,
        name="linear_scan_tpu",
    )
    return call(*inputs)
