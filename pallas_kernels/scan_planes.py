"""Pieces shared by the TPU and GPU linear-scan kernels: complex arithmetic on real
planes, the static description of one kernel call, and the order of its refs.

A complex value travels as a tuple of float32 planes (re, im); a real one as (re,).
Neither Mosaic nor Triton has complex types.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax import lax


def mul(x, y):
    if len(x) == 1:
        return (x[0] * y[0],)
    (xr, xi), (yr, yi) = x, y
    return (xr * yr - xi * yi, xr * yi + xi * yr)


def add(x, y):
    return tuple(u + v for u, v in zip(x, y))


def step(h, prod, a_row, b_row, k_row, *, post, conj):
    """One step on planes: returns (new carry, output row, new product of A)."""
    if conj and len(a_row) == 2:
        a_row = (a_row[0], -a_row[1])
    if k_row is not None:
        a_row = tuple(x * k_row for x in a_row)
    if post:  # backward form: out = c + x, c <- A out
        out = add(h, b_row)
        h_new = mul(a_row, out)
    else:  # h <- A h + b, out = h
        h_new = add(mul(a_row, h), b_row)
        out = h_new
    prod_new = None if prod is None else mul(a_row, prod)
    return h_new, out, prod_new


def select(valid, new, old):
    if old is None:
        return None
    return tuple(jnp.where(valid, x, y) for x, y in zip(new, old))


class KernelSpec(NamedTuple):
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


def unpack_refs(refs, s: KernelSpec):
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


def to_complex(planes):
    return planes[0] if len(planes) == 1 else lax.complex(planes[0], planes[1])


def to_planes(x, n_planes):
    return (x,) if n_planes == 1 else (jnp.real(x), jnp.imag(x))
