"""linear_recurrence against a NumPy loop (values) and a plain lax.scan (gradients)."""

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.test_util import check_grads

from jaxml import auto_impl
from jaxml.ssm import linear_recurrence, recurrence, register_impl

IMPLS = ["associative", "sequential", "chunked"]

# Everything runs under jit: eager associative scans dispatch (and compile) op by op.
lr_jit = jax.jit(linear_recurrence, static_argnames=("axis", "reverse", "impl", "chunk_size"))


def numpy_recurrence(a, b, h0=None, axis=0, reverse=False, reset=None):
    """h_t = a_t h_{t-1} + b_t (or h_{t+1} when reverse) by an explicit loop, in float64."""
    b = np.moveaxis(np.asarray(b, np.complex128), axis, 0)
    a = np.moveaxis(
        np.broadcast_to(np.asarray(a, np.complex128), np.moveaxis(b, 0, axis).shape), axis, 0
    )
    if reset is not None:
        reset = np.moveaxis(np.broadcast_to(reset, np.moveaxis(b, 0, axis).shape), axis, 0)
    h = (
        np.zeros(b.shape[1:], np.complex128)
        if h0 is None
        else np.broadcast_to(h0, b.shape[1:]).astype(np.complex128)
    )
    out = np.empty_like(b)
    steps = range(b.shape[0] - 1, -1, -1) if reverse else range(b.shape[0])
    for t in steps:
        if reset is not None:
            h = np.where(reset[t], 0.0, h)
        h = a[t] * h + b[t]
        out[t] = h
    return np.moveaxis(out, 0, axis)


def random_problem(rng, shape, a_shape, complex_, axis=1):
    """Stable random coefficients (|a| < 1) so that long sequences stay bounded."""
    mag = rng.uniform(0.5, 0.999, a_shape)
    if complex_:
        a = mag * np.exp(1j * rng.uniform(-np.pi, np.pi, a_shape))
        b = rng.normal(size=shape) + 1j * rng.normal(size=shape)
        dtype = np.complex64
    else:
        a = mag * rng.choice([-1.0, 1.0], a_shape)
        b = rng.normal(size=shape)
        dtype = np.float32
    h0_shape = shape[:axis] + shape[axis + 1 :]
    h0 = rng.normal(size=h0_shape) + (1j * rng.normal(size=h0_shape) if complex_ else 0)
    return a.astype(dtype), b.astype(dtype), h0.astype(dtype)


def assert_close(x, ref, tol):
    x = np.asarray(x)
    scale = max(1.0, np.abs(ref).max())
    np.testing.assert_allclose(x, ref, atol=tol * scale, rtol=tol)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reverse", [False, True])
# Complex with one `a` for all steps is the S5 case; real and time-varying the RL/gating one.
@pytest.mark.parametrize("complex_, time_varying", [(True, False), (False, True)])
def test_matches_numpy_with_h0_and_resets(impl, reverse, complex_, time_varying):
    rng = np.random.default_rng(0)
    B, L, P = 3, 37, 5  # 37 is not a multiple of the chunk size: exercises padding
    a_shape = (B, L, P) if time_varying else (P,)
    a, b, h0 = random_problem(rng, (B, L, P), a_shape, complex_)
    reset = rng.uniform(size=(B, L)) < 0.1
    reset[0, 0] = True  # a reset at the first step discards h0
    h = lr_jit(a, b, h0, axis=1, reverse=reverse, impl=impl, reset=reset, chunk_size=8)
    ref = numpy_recurrence(a, b, h0, axis=1, reverse=reverse, reset=reset[..., None])
    assert h.dtype == b.dtype and h.shape == b.shape
    assert_close(h, ref if complex_ else ref.real, 1e-5)


# Long sequences only for the cheap-to-compile cores (the associative scan is
# checked at length 16384 once, forward, in float32).
@pytest.mark.parametrize(
    "impl, reverse",
    [
        ("sequential", False),
        ("sequential", True),
        ("chunked", False),
        ("chunked", True),
        ("associative", False),
    ],
)
def test_long_sequence_matches_numpy(impl, reverse):
    rng = np.random.default_rng(1)
    L = 16384
    a, b, h0 = random_problem(rng, (L, 2, 3), (L, 2, 3), complex_=False, axis=0)
    h = lr_jit(a, b, h0, reverse=reverse, impl=impl, chunk_size=128)
    assert_close(h, numpy_recurrence(a, b, h0, reverse=reverse).real, 1e-4)


def test_long_complex_constant_a_sequential():
    # The S5 case: one complex Λ̄ for all steps, eigenvalues close to the unit circle.
    rng = np.random.default_rng(2)
    L, P = 16384, 4
    a = (0.9995 * np.exp(1j * rng.uniform(-0.1, 0.1, P))).astype(np.complex64)
    b = (rng.normal(size=(L, P)) + 1j * rng.normal(size=(L, P))).astype(np.complex64)
    h = lr_jit(a, b, impl="sequential")
    assert_close(h, numpy_recurrence(a, b), 2e-4)


@pytest.mark.parametrize(
    "axis, impl", [(0, "associative"), (1, "chunked"), (-1, "sequential"), (-1, "auto")]
)
def test_axis_and_broadcasting(axis, impl):
    rng = np.random.default_rng(3)
    shape = (6, 7, 8)
    b = rng.normal(size=shape).astype(np.float32)
    a = np.float32(0.9)  # a scalar broadcasts to everything
    ref = numpy_recurrence(a, b, axis=axis).real
    assert_close(lr_jit(a, b, axis=axis, impl=impl, chunk_size=3), ref, 1e-5)


def test_leading_dims_reset_equals_full_reset_and_restarts():
    rng = np.random.default_rng(4)
    a, b, _ = random_problem(rng, (2, 20, 3), (3,), complex_=True)
    reset = np.zeros((2, 20), bool)
    reset[:, 7] = True
    h = lr_jit(a, b, axis=1, reset=reset, impl="sequential")
    h_full = lr_jit(a, b, axis=1, reset=reset[..., None], impl="sequential")
    assert_close(h, np.asarray(h_full), 1e-6)
    # After the reset the state only depends on inputs from step 7 on.
    h_tail = lr_jit(a, b[:, 7:], axis=1, impl="sequential")
    assert_close(h[:, 7:], np.asarray(h_tail), 1e-5)


# --------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------


def scan_reference(a, b, h0, reverse, reset):
    """Independent reference: a plain lax.scan over (B, L, P) time-major slices."""
    a = jnp.broadcast_to(a, b.shape)
    a = jnp.where(reset[..., None], 0.0, a)

    def step(h, ab):
        a_t, b_t = ab
        h = a_t * h + b_t
        return h, h

    xs = (jnp.swapaxes(a, 0, 1), jnp.swapaxes(b, 0, 1))
    _, h = lax.scan(step, h0, xs, reverse=reverse)
    return jnp.swapaxes(h, 0, 1)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reverse, time_varying", [(False, False), (True, True)])
def test_gradients_match_scan_reference(impl, reverse, time_varying):
    rng = np.random.default_rng(5)
    B, L, P = 2, 19, 3
    a, b, h0 = random_problem(rng, (B, L, P), (B, L, P) if time_varying else (P,), complex_=True)
    reset = rng.uniform(size=(B, L)) < 0.15
    w = jnp.asarray(
        (rng.normal(size=(B, L, P)) + 1j * rng.normal(size=(B, L, P))).astype(np.complex64)
    )

    def loss(fn):
        return lambda a, b, h0: jnp.sum(jnp.real(w * fn(a, b, h0)) ** 2)

    ours = jax.jit(
        jax.grad(
            loss(
                lambda a, b, h0: linear_recurrence(
                    a, b, h0, axis=1, reverse=reverse, impl=impl, reset=reset, chunk_size=4
                )
            ),
            argnums=(0, 1, 2),
        )
    )(a, b, h0)
    ref = jax.jit(
        jax.grad(loss(lambda a, b, h0: scan_reference(a, b, h0, reverse, reset)), argnums=(0, 1, 2))
    )(a, b, h0)
    for g, r in zip(ours, ref):
        assert g.shape == r.shape and g.dtype == r.dtype
        assert_close(g, np.asarray(r), 1e-4)


# chunked: sequential inside chunks, associative across them; sequential: a hand-written
# VJP (the reverse recurrence, and d a summed over the dims a is broadcast along).
@pytest.mark.parametrize(
    "impl, a_shape, reverse, with_reset",
    [
        ("chunked", (2, 9, 3), False, True),
        ("sequential", (2, 9, 3), False, True),
        ("sequential", (1, 9, 3), True, False),
        ("sequential", (3,), True, False),  # resets would make a time-varying
        ("sequential", (3,), False, False),
        ("sequential", (2, 1, 1), False, False),
    ],
)
def test_gradients_against_finite_differences(impl, a_shape, reverse, with_reset):
    rng = np.random.default_rng(6)
    with jax.enable_x64(True):
        a, b, h0 = random_problem(rng, (2, 9, 3), a_shape, complex_=True)
        a, b, h0 = (jnp.asarray(x, jnp.complex128) for x in (a, b, h0))
        reset = jnp.asarray(rng.uniform(size=(2, 9)) < 0.2) if with_reset else None
        fn = jax.jit(
            lambda a, b, h0: linear_recurrence(
                a, b, h0, axis=1, impl=impl, reset=reset, reverse=reverse, chunk_size=4
            )
        )
        # d a of one a for all steps and rows sums 18 terms: the finite difference's own error
        # there reaches ~1e-6 relative (measured: 1.1e-6), so those cases get 1e-5.
        tol = 1e-5 if len(a_shape) == 1 else 1e-6
        check_grads(fn, (a, b, h0), order=1, modes=["rev"], atol=tol, rtol=tol)


# --------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------


def test_bad_options_raise():
    b = jnp.ones((4, 3))
    with pytest.raises(ValueError, match="impl"):
        linear_recurrence(0.5, b, impl="fast")
    with pytest.raises(ValueError, match="broadcast"):
        linear_recurrence(jnp.ones((2,)), b)
    with pytest.raises(ValueError, match="h0"):
        linear_recurrence(0.5, b, jnp.ones((4,)))
    with pytest.raises(ValueError, match="axis"):
        linear_recurrence(0.5, b, axis=2)


def test_missing_kernel_is_one_clear_error(monkeypatch):
    # None in sys.modules makes `import pallas_kernels.linear_scan` raise ImportError.
    monkeypatch.setitem(sys.modules, "pallas_kernels.linear_scan", None)
    with pytest.raises(NotImplementedError) as info:
        linear_recurrence(0.5, jnp.ones((5, 2)), impl="pallas")
    message = str(info.value)
    assert "\n" not in message
    assert "pallas_kernels.linear_scan" in message and "could not be imported" in message
    assert "impl='auto'" in message and "register_impl" in message


def test_registered_pallas_core_replaces_the_kernel(monkeypatch):
    b = jnp.ones((5, 2))
    monkeypatch.setattr(recurrence, "_IMPLS", dict(recurrence._IMPLS))
    calls = []

    def core(a, b, *, reverse):
        calls.append((a.shape, b.shape, reverse))
        return recurrence._sequential_core(a, b, reverse=reverse)

    register_impl("pallas", core)
    h = linear_recurrence(0.5, b, jnp.ones((2,)), impl="pallas", reverse=True)
    assert calls == [((1, 1), (5, 2), True)]
    assert_close(h, numpy_recurrence(0.5, b, np.ones(2), reverse=True).real, 1e-6)


# --------------------------------------------------------------------------
# impl="auto": only what a committed benchmark measured
# --------------------------------------------------------------------------


def fake_report(rows, allowed=1e-3, interpreted=False):
    """A benchmarks/scan.py report: rows of (impl, length, median_s, worst error)."""
    results = [
        {
            "case": "recurrence",
            "mode": "fwd_bwd",
            "impl": impl,
            "length": length,
            "median_s": t,
            "max_rel_error": None if err is None else {"h": err / 2, "grad_a": err, "grad_b": 0.0},
        }
        for impl, length, t, err in rows
    ]
    config = {"max_rel_error_allowed": allowed, "pallas_interpreted": interpreted}
    return {"config": config, "results": results}


def test_auto_follows_the_fastest_correct_entry():
    rows = [
        ("associative", 1024, 1.0, 1e-6),
        ("associative", 4096, 4.0, 1e-6),
        ("sequential", 1024, 0.5, 1e-6),
        ("sequential", 4096, 2.0, 1e-6),
        ("chunked", 1024, 0.6, 1e-6),
        ("chunked", 4096, 2.2, 1e-6),
    ]
    assert auto_impl.fastest_correct(fake_report(rows), "recurrence") == "sequential"
    # Faster still, but wrong at one length, NaN, unchecked, or not measured at every length:
    for bad in [
        [("pallas", 1024, 0.1, 1e-6), ("pallas", 4096, 0.4, 0.03)],
        [("pallas", 1024, 0.1, 1e-6), ("pallas", 4096, 0.4, float("nan"))],
        [("pallas", 1024, 0.1, None), ("pallas", 4096, 0.4, 1e-6)],
        [("pallas", 1024, 0.1, 1e-6)],
    ]:
        assert auto_impl.fastest_correct(fake_report(rows + bad), "recurrence") == "sequential"
    good = [("pallas", 1024, 0.1, 1e-6), ("pallas", 4096, 0.4, 1e-6)]
    assert auto_impl.fastest_correct(fake_report(rows + good), "recurrence") == "pallas"
    # A kernel timed in the Pallas interpreter says nothing about its speed.
    interpreted = fake_report(rows + good, interpreted=True)
    assert auto_impl.fastest_correct(interpreted, "recurrence") == "sequential"
    assert auto_impl.fastest_correct(fake_report([]), "recurrence") is None


def test_auto_without_a_measurement_is_the_xla_scan(monkeypatch):
    monkeypatch.setattr(auto_impl, "SCAN_AUTO_IMPL", {"gpu": "pallas"})
    assert recurrence.resolve_impl("auto", "gpu") == "pallas"
    assert recurrence.resolve_impl("auto", "tpu") == "associative"
    assert recurrence.resolve_impl("auto", "cpu") == "associative"
    monkeypatch.setattr(auto_impl, "SCAN_AUTO_IMPL", {})
    assert recurrence.resolve_impl("auto", "gpu") == "associative"
    assert recurrence.resolve_impl("chunked") == "chunked"


ROOT = Path(__file__).resolve().parents[1]


def test_committed_auto_table_is_what_the_committed_benchmarks_show():
    """Every entry cites a committed benchmarks/scan.py JSON and names the fastest correct
    forward+backward implementation there; GPU and TPU, never measured, get the XLA scan."""
    assert set(auto_impl.SCAN_AUTO_IMPL) == set(auto_impl.SCAN_AUTO_SOURCES)
    for backend, source in auto_impl.SCAN_AUTO_SOURCES.items():
        report = json.loads((ROOT / source).read_text())
        assert report["device"]["backend"] == backend, source
        assert auto_impl.fastest_correct(report, "recurrence") == auto_impl.SCAN_AUTO_IMPL[backend]
    for backend in ("gpu", "tpu"):
        if backend not in auto_impl.SCAN_AUTO_IMPL:
            assert recurrence.resolve_impl("auto", backend) == "associative"
