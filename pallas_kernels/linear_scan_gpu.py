"""GPU (Triton) variant of the linear-scan kernel; see `pallas_kernels.linear_scan`.

Grid (batch, segment, P block) with P blocks of a power-of-two width and lane masks
where P is not a multiple of it; each program streams its whole segment, R rows per
loop iteration: the R rows' loads are issued first (they do not depend on the carry),
then the R steps run in registers, then the R rows are stored, so no load waits
behind a store to the output. The carry lives in registers.

Imports Pallas only when a kernel is built.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
from jax import lax

from pallas_kernels.scan_planes import KernelSpec, step, unpack_refs


def _gpu_kernel(*refs, s: KernelSpec, Pb: int, R: int):
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as pltriton

    a_refs, b_refs, h0_refs, keep_ref, h_refs, carry_refs, prod_refs, _ = unpack_refs(refs, s)
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

    def steps(first, count, state):
        """Steps first .. first + count - 1: all loads, then the recurrence, then all stores."""
        ts = [first + j for j in range(count)]
        ts = [jnp.asarray(s.n - 1 - k if s.reverse else k, jnp.int32) for k in ts]
        a_rows = [a_const if s.const_a else tuple(load(r, t, 1.0) for r in a_refs) for t in ts]
        b_rows = [tuple(load(r, t) for r in b_refs) for t in ts]
        k_rows = [keep_ref[t] if s.has_keep else None for t in ts]
        h, prod = state
        outs = []
        for a_row, b_row, k_row in zip(a_rows, b_rows, k_rows):
            h, out, prod = step(h, prod, a_row, b_row, k_row, post=s.post, conj=s.conj)
            outs.append(out)
        if s.want_h:
            for t, out in zip(ts, outs):
                for r, x in zip(h_refs, out):
                    store(r, x, t)
        return h, prod

    zeros = jnp.zeros((Pb,), f32)
    h = tuple(load(r) for r in h0_refs) if s.has_h0 else (zeros,) * s.n_planes
    prod = ((zeros + 1.0,) + (zeros,) * (s.n_planes - 1)) if s.want_prod else None
    n_tiles, tail = divmod(s.n, R)
    state = lax.fori_loop(0, n_tiles, lambda i, st: steps(i * R, R, st), (h, prod))
    if tail:
        state = steps(n_tiles * R, tail, state)
    h, prod = state
    if s.want_carry:
        for r, x in zip(carry_refs, h):
            store(r, x)
    if s.want_prod:
        for r, x in zip(prod_refs, prod):
            store(r, x)


def call_kernel(spec: KernelSpec, a, b, h0, keep, *, Pb, R, interpret, out_shape):
    """Runs the kernel over the grid (batch, segment, P block); returns its outputs.

    a: planes (Ba, S or 1, n or 1, P); b: planes (B, S, n, P); h0: float32 planes
    (B, S, 1, P) or None; keep: float32 (B, S, n) or None.
    """
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as pltriton

    B, S, n, P = b[0].shape
    n_pb = -(-P // Pb)
    a_batch = (lambda i: i) if a[0].shape[0] > 1 else (lambda i: 0)
    seq_block = pl.BlockSpec((None, None, n, Pb), lambda i, s, p: (i, s, 0, p))
    lane_block = pl.BlockSpec((None, None, None, Pb), lambda i, s, p: (i, s, 0, p))
    if spec.const_a:
        a_spec = pl.BlockSpec((None, None, None, Pb), lambda i, s, p: (a_batch(i), 0, 0, p))
    else:
        a_spec = pl.BlockSpec((None, None, n, Pb), lambda i, s, p: (a_batch(i), s, 0, p))
    inputs = list(a) + list(b)
    in_specs = [a_spec] * len(a) + [seq_block] * len(b)
    if h0 is not None:
        inputs += list(h0)
        in_specs += [lane_block] * len(h0)
    if keep is not None:
        inputs.append(keep)
        in_specs.append(pl.BlockSpec((None, None, n), lambda i, s, p: (i, s, 0)))
    k = spec.n_planes
    out_specs = [seq_block] * (k if spec.want_h else 0)
    out_specs += [lane_block] * (k * (int(spec.want_carry) + int(spec.want_prod)))
    call = pl.pallas_call(
        functools.partial(_gpu_kernel, s=spec, Pb=Pb, R=R),
        out_shape=out_shape,
        grid=(B, S, n_pb),
        in_specs=in_specs,
        out_specs=out_specs,
        compiler_params=pltriton.CompilerParams(num_warps=max(1, min(8, Pb // 32))),
        interpret=interpret,
        name="linear_scan_gpu",
    )
    return call(*inputs)
