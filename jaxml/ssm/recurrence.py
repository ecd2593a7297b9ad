"""Diagonal linear recurrences h_t = a_t * h_{t-1} + b_t, the scan at the heart of S5.

`linear_recurrence` handles the user-facing options (time axis, initial state,
episode resets, broadcasting, reverse direction) and reduces every call to one
*core* problem: a time-major recurrence with zero initial state. Cores are
interchangeable algorithms for that problem:

- ``associative``: `lax.associative_scan` on pairs (a, b), O(log L) depth. This
  is the algorithm of the official S5 code.
- ``sequential``: one step at a time, O(L) depth but the least work, updated in
  place along the caller's time axis (no time-major copies), with a hand-written
  VJP (the same recurrence run backwards). `linear_recurrence` calls it on b as
  given; it has no forward-mode (JVP) rule, use "associative" for `jax.jvp`.
- ``chunked``: sequential scans inside fixed-size chunks, run for all chunks at
  once, plus an associative scan across chunk boundaries. This is the layout a
  Pallas kernel uses (one chunk per program, carries combined afterwards).
- ``pallas``: the Pallas kernel of `pallas_kernels.linear_scan` (TPU: Mosaic;
  GPU: Triton; elsewhere: interpret mode, slow, for tests). It is imported on
  first use, so importing jaxml never imports Pallas. `linear_recurrence` hands
  it b as (batch, L, P) -- the dims before the time axis flattened into batch,
  those after it into P, a free reshape -- together with h0 and resets, so no
  transpose is needed; the kernel has its own `jax.custom_vjp`. Other callers
  of the core get the generic (L, ...) -> (1, L, P) path. `register_impl` can
  still replace the slot. Under a mesh (`with jax.set_mesh(mesh):` around the
  jitted step) the kernel runs inside `shard_map` over the mesh's batch axes
  (`jaxml.parallel.kernel_partition`), so each device scans its own rows.

``auto`` is the measured choice for the backend (`jaxml.auto_impl`): the core a
committed benchmark showed correct and fastest there, else ``associative``.

The associative and chunked cores are plain JAX, so their gradients (w.r.t. a, b
and h0) come from autodiff.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxml import auto_impl
from jaxml.parallel.kernel_partition import over_batch

# A core takes time-major `a` (length 1 when constant in time, otherwise L;
# other dims broadcastable to b's) and `b` (L, ...), and returns h (L, ...)
# for a zero initial state.
CoreFn = Callable[..., jax.Array]

DEFAULT_CHUNK_SIZE = 64

# impl="auto": the measured choice per backend, from jaxml.auto_impl (read at call
# time). A backend without a committed benchmark gets the XLA associative scan.
AUTO_IMPL = auto_impl.SCAN_AUTO_IMPL


# --------------------------------------------------------------------------
# Cores
# --------------------------------------------------------------------------


def _combine(left, right):
    """Compose two affine maps h -> a h + b; `left` is applied first."""
    a_l, b_l = left
    a_r, b_r = right
    return a_r * a_l, a_r * b_l + b_r


def _associative_core(a, b, *, reverse: bool) -> jax.Array:
    # The scan needs a value for every step; its other dims may stay
    # broadcastable (e.g. one Lambda_bar for the whole batch), which keeps the
    # a-products of the scan tree small.
    a = jnp.broadcast_to(a, (b.shape[0],) + a.shape[1:])
    _, h = lax.associative_scan(_combine, (a, b), reverse=reverse)
    return h


def _in_place_scan(a, b, *, axis: int, reverse: bool) -> jax.Array:
    """h_t = a_t h_{t-1} + b_t along `axis`, written over a copy of b one step at a time.

    `a` has b's ndim, time extent 1 or L. Each step is one in-place
    dynamic-update-slice that reads the previous state from the output itself, so
    the loop carries only that array and needs no time-major transpose: on XLA:CPU
    this was 2.2x (forward) and 2.4x (forward+backward) faster than a `lax.scan` over
    a moved axis, side by side at B 8, L 1k, P 256: its transposes in and out cost as
    much as the scan itself. Unrolling makes XLA copy the array every step; keep
    unroll at 1.
    """
    length = b.shape[axis]
    const_a = a.shape[axis] == 1
    step = -1 if reverse else 1
    first = length - 1 if reverse else 0

    def body(k, h):
        t = first + step * k
        h_prev = lax.dynamic_slice_in_dim(h, t - step, 1, axis)
        b_t = lax.dynamic_slice_in_dim(h, t, 1, axis)
        a_t = a if const_a else lax.dynamic_slice_in_dim(a, t, 1, axis)
        return lax.dynamic_update_slice_in_dim(h, a_t * h_prev + b_t, t, axis)

    return lax.fori_loop(1, length, body, b)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _sequential_recurrence(a, b, axis: int, reverse: bool) -> jax.Array:
    return _in_place_scan(a, b, axis=axis, reverse=reverse)


def _sequential_forward(a, b, axis, reverse):
    h = _in_place_scan(a, b, axis=axis, reverse=reverse)
    return h, (a, h)


def _sequential_backward(axis, reverse, residuals, g):
    # Autodiff of the fori_loop would save the whole output at every step. The
    # transpose is the same recurrence run the other way, g_b,t = g_t + a_{t+1} g_b,t+1
    # (plain a, no conjugate: JAX's complex convention), and d a_t = g_b,t * h_{t-1}
    # (in reverse: a_{t-1} and h_{t+1}).
    a, h = residuals
    step = -1 if reverse else 1
    a_next = a if a.shape[axis] == 1 else _shifted(a, step, axis, fill=1)
    grad_b = _in_place_scan(a_next, g, axis=axis, reverse=not reverse)
    h_prev = _shifted(h, -step, axis, fill=0)
    summed = tuple(i for i, (na, nh) in enumerate(zip(a.shape, h.shape)) if na == 1 and nh != 1)
    grad_a = jnp.sum(grad_b * h_prev, axis=summed, keepdims=True)
    return grad_a.astype(a.dtype), grad_b


def _shifted(x, by: int, axis: int, *, fill) -> jax.Array:
    """x_{t+by} at each t along `axis` (by = +1 or -1), `fill` where that is outside."""
    length = x.shape[axis]
    edge = jnp.full_like(lax.slice_in_dim(x, 0, 1, axis=axis), fill)
    if by > 0:
        return jnp.concatenate([lax.slice_in_dim(x, 1, None, axis=axis), edge], axis)
    return jnp.concatenate([edge, lax.slice_in_dim(x, 0, length - 1, axis=axis)], axis)


_sequential_recurrence.defvjp(_sequential_forward, _sequential_backward)


def _sequential_core(a, b, *, reverse: bool) -> jax.Array:
    return _sequential_recurrence(a, b, 0, reverse)


def _chunked_core(a, b, *, reverse: bool, chunk_size: int = DEFAULT_CHUNK_SIZE) -> jax.Array:
    length = b.shape[0]
    t = min(chunk_size, length)
    n = -(-length // t)  # number of chunks
    pad = n * t - length
    const_a = a.shape[0] == 1
    if pad:
        # Identity steps (a=1, b=0) at the end: they come after every real step
        # going forward, and going backward they carry the zero state unchanged.
        b = jnp.concatenate([b, jnp.zeros((pad,) + b.shape[1:], b.dtype)])
        if not const_a:
            a = jnp.concatenate([a, jnp.ones((pad,) + a.shape[1:], a.dtype)])

    # (n*t, ...) -> (t, n, ...): scan over the position inside a chunk while all
    # chunks advance together.
    def to_chunks(x):
        return jnp.swapaxes(x.reshape((n, t) + x.shape[1:]), 0, 1)

    b_c = to_chunks(b)

    # Local pass: state from a zero start at each chunk boundary, and the
    # running product of a since that boundary.
    def step(carry, ab_t):
        h, prod = carry
        a_t, b_t = ab_t
        h = a_t * h + b_t
        prod = a_t * prod
        return (h, prod), (h, prod)

    if const_a:
        a_c = a  # (1, ...): the same for every position and chunk
        xs = (jnp.broadcast_to(a_c, (t,) + a_c.shape[1:])[:, None], b_c)
    else:
        xs = (to_chunks(a), b_c)
    init = (jnp.zeros(b_c.shape[1:], b.dtype), jnp.ones(xs[0].shape[1:], a.dtype))
    _, (h_loc, prod) = lax.scan(step, init, xs, reverse=reverse)

    # Carries across chunk boundaries: the state entering each chunk is the
    # (exclusive) scan of the per-chunk maps h -> prod_total * h + h_last.
    last = 0 if reverse else t - 1
    prod_last = prod[last]
    totals = (jnp.broadcast_to(prod_last, (n,) + prod_last.shape[1:]), h_loc[last])
    _, h_end = lax.associative_scan(_combine, totals, reverse=reverse)  # (n, ...)
    zero = jnp.zeros((1,) + h_end.shape[1:], h_end.dtype)
    if reverse:
        h_in = jnp.concatenate([h_end[1:], zero])
    else:
        h_in = jnp.concatenate([zero, h_end[:-1]])

    h = h_loc + prod * h_in[None]
    h = jnp.swapaxes(h, 0, 1).reshape((n * t,) + h.shape[2:])
    return h[:length]


PALLAS_MISSING = (
    "linear_recurrence(impl='pallas') needs pallas_kernels.linear_scan, which could not be "
    "imported in this process ({error}); use impl='auto', 'associative', 'sequential' or "
    "'chunked', or register a core with jaxml.ssm.recurrence.register_impl('pallas', fn)."
)


def _load_pallas_kernel():
    """`pallas_kernels.linear_scan.linear_scan`, imported on first use.

    Raises NotImplementedError (one line, with the import error) when it cannot be imported.
    """
    try:
        from pallas_kernels.linear_scan import linear_scan
    except ImportError as error:
        raise NotImplementedError(PALLAS_MISSING.format(error=error)) from None
    return linear_scan


def _pallas_core(a, b, *, reverse: bool) -> jax.Array:
    """Core-protocol wrapper: (L, ...) time-major -> the kernel's (1, L, P) layout."""
    kernel = _load_pallas_kernel()
    length, rest = b.shape[0], b.shape[1:]
    a = jnp.broadcast_to(a, a.shape[:1] + rest)  # only the per-step dims, never over time
    h = kernel(a.reshape(1, a.shape[0], -1), b.reshape(1, length, -1), reverse=reverse)
    return h.reshape(b.shape)


def _pallas_recurrence(a, b, h0, reset, *, axis: int, reverse: bool) -> jax.Array:
    """The kernel on b viewed as (dims before axis, L, dims after axis): reshapes only.

    `a` and `reset` have b's ndim (broadcastable); `h0` is broadcastable to b
    without its time axis. `a` keeps a time extent of 1 when constant in time.
    """
    kernel = _load_pallas_kernel()
    b_shape = b.shape
    lead, length, trail = b.shape[:axis], b.shape[axis], b.shape[axis + 1 :]
    n_lead, n_trail = math.prod(lead), math.prod(trail)
    if reset is not None and any(d != 1 for d in reset.shape[axis + 1 :]):
        # A reset that differs across the per-step dims is not the kernel's (batch, L)
        # mask: fold it into a (materialized over time, as the generic path does).
        a = jnp.where(reset, jnp.zeros((), a.dtype), a)
        reset = None
    a_lead = () if all(d == 1 for d in a.shape[:axis]) else lead
    a = jnp.broadcast_to(a, (1,) * (axis - len(a_lead)) + a_lead + a.shape[axis : axis + 1] + trail)
    a = a.reshape(math.prod(a_lead), a.shape[axis], n_trail)
    if h0 is not None:
        h0 = jnp.broadcast_to(h0, lead + trail).reshape(n_lead, n_trail)
    if reset is not None:
        reset = jnp.broadcast_to(reset, lead + (length,) + (1,) * len(trail))
        reset = reset.reshape(n_lead, length)
    b = b.reshape(n_lead, length, n_trail)
    # Per device under a mesh: the kernel sees its shard of the (flattened) batch.
    call = lambda a, b, h0, reset: kernel(a, b, h0, reverse=reverse, reset=reset)
    a_dim = 0 if a.shape[0] > 1 else None
    h = over_batch(call, (a, b, h0, reset), (a_dim, 0, 0, 0))
    return h.reshape(b_shape)


_IMPLS: dict[str, CoreFn] = {
    "associative": _associative_core,
    "sequential": _sequential_core,
    "chunked": _chunked_core,
    "pallas": _pallas_core,
}


def register_impl(name: str, fn: CoreFn) -> None:
    """Registers a core under `name` (the Pallas kernels fill the "pallas" slot).

    `fn(a, b, *, reverse)` receives time-major arrays: `b` of shape (L, ...) and
    `a` of shape (1 or L, ...) broadcastable to `b`; it returns h (L, ...) for a
    zero initial state. Resets, h0 and the time axis are handled before the call.
    """
    if name == "auto":
        raise ValueError("'auto' is reserved for the backend-dependent choice.")
    _IMPLS[name] = fn


def available_impls() -> tuple[str, ...]:
    return ("auto",) + tuple(_IMPLS)


def resolve_impl(impl: str, backend: str | None = None) -> str:
    """Maps "auto" to the measured choice for `backend` (default: JAX's default)."""
    if impl == "auto":
        backend = backend or jax.default_backend()
        return auto_impl.SCAN_AUTO_IMPL.get(backend, auto_impl.SCAN_SAFE_IMPL)
    if impl not in _IMPLS:
        raise ValueError(
            f"Unknown linear_recurrence impl {impl!r}; expected one of {available_impls()}."
        )
    return impl


# --------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------


def _broadcasts_to(shape, target) -> bool:
    if len(shape) > len(target):
        return False
    return all(s in (1, t) for s, t in zip(shape[::-1], target[::-1]))


def linear_recurrence(
    a,
    b,
    h0=None,
    *,
    axis: int = 0,
    reverse: bool = False,
    impl: str = "auto",
    reset=None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> jax.Array:
    """Computes h_t = a_t * h_{t-1} + b_t along `axis` (elementwise, real or complex).

    Args:
      a: multipliers, broadcastable to `b` (e.g. shape (P,) for a time-invariant
        diagonal state matrix and `b` of shape (batch, L, P)).
      b: inputs; `b.shape[axis]` is the sequence length L.
      h0: state before the first step (h_{-1}), shape broadcastable to `b`
        without its time axis; zeros when None.
      axis: the time axis of `b`.
      reverse: run from the end: h_t = a_t * h_{t+1} + b_t, and `h0` is the state
        beyond the last step.
      impl: "auto", "associative", "sequential", "chunked" or "pallas".
      reset: optional boolean mask of episode starts. Where it is True the
        recurrence restarts, h_t = b_t (the previous state, or `h0` at the first
        step, is treated as 0). Its shape is broadcastable to `b`, or it may give
        only `b`'s leading dims through the time axis (e.g. (batch, L) for `b`
        of shape (batch, L, P)).
      chunk_size: chunk length of the "chunked" implementation.

    Returns:
      h with the shape of `b` and the common dtype of a, b and h0.
    """
    b = jnp.asarray(b)
    a = jnp.asarray(a)
    ndim = b.ndim
    if ndim == 0:
        raise ValueError("linear_recurrence needs `b` with a time axis; got a scalar.")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis={axis} is out of range for b of shape {b.shape}.")
    axis %= ndim
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    core = _IMPLS[resolve_impl(impl)]
    direct_pallas = core is _pallas_core
    if direct_pallas:
        _load_pallas_kernel()  # a missing kernel fails here, before any work

    dtypes = [a.dtype, b.dtype] + ([jnp.asarray(h0).dtype] if h0 is not None else [])
    dtype = jnp.result_type(*dtypes)
    if not jnp.issubdtype(dtype, jnp.inexact):
        dtype = jnp.result_type(dtype, jnp.float32)
    a = a.astype(dtype)
    b = b.astype(dtype)

    if not _broadcasts_to(a.shape, b.shape):
        raise ValueError(f"a of shape {a.shape} does not broadcast to b of shape {b.shape}.")
    a = a.reshape((1,) * (ndim - a.ndim) + a.shape)

    if reset is not None:
        reset = jnp.asarray(reset, bool)
        if reset.ndim < ndim:  # leading-dims form, e.g. (batch, L)
            reset = reset.reshape(reset.shape + (1,) * (ndim - reset.ndim))
        if not _broadcasts_to(reset.shape, b.shape):
            raise ValueError(
                f"reset of shape {reset.shape} does not broadcast to b of shape {b.shape}."
            )
        if not direct_pallas:
            # A restart is the same recurrence with a_t = 0 at that step.
            a = jnp.where(reset, jnp.zeros((), dtype), a)
            reset = None

    if h0 is not None:
        h0 = jnp.asarray(h0, dtype)
        if not _broadcasts_to(h0.shape, b.shape[:axis] + b.shape[axis + 1 :]):
            raise ValueError(
                f"h0 of shape {h0.shape} does not broadcast to the per-step shape "
                f"{b.shape[:axis] + b.shape[axis + 1 :]} (b's shape without the time axis)."
            )

    if direct_pallas:
        return _pallas_recurrence(a, b, h0, reset, axis=axis, reverse=reverse)

    if h0 is not None:
        # Fold the initial state into the first step: h_first = a h0 + b.
        first = b.shape[axis] - 1 if reverse else 0
        a_first = lax.index_in_dim(a, first if a.shape[axis] > 1 else 0, axis)
        b_first = lax.index_in_dim(b, first, axis)
        h0 = jnp.expand_dims(jnp.broadcast_to(h0, b.shape[:axis] + b.shape[axis + 1 :]), axis)
        b = lax.dynamic_update_index_in_dim(b, b_first + a_first * h0, first, axis)

    if core is _sequential_core:
        # Along `axis` in place: no time-major copies of b and h.
        return _sequential_recurrence(a, b, axis, reverse)

    a = jnp.moveaxis(a, axis, 0)
    b = jnp.moveaxis(b, axis, 0)

    if core is _chunked_core:
        h = core(a, b, reverse=reverse, chunk_size=chunk_size)
    else:
        h = core(a, b, reverse=reverse)
    return jnp.moveaxis(h, 0, axis)
