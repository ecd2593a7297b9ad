"""benchmarks/scan.py checks every implementation against NumPy before it times anything."""

import benchmark_scripts
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxml.ssm import linear_recurrence, recurrence


@pytest.fixture(scope="module")
def scan():
    return benchmark_scripts.load("scan")


@pytest.fixture
def one_step_late(monkeypatch, scan):
    """A plausible kernel bug: each step adds the previous input, h_t = a h_{t-1} + b_{t-1}."""
    monkeypatch.setattr(recurrence, "_IMPLS", dict(recurrence._IMPLS))
    monkeypatch.setattr(scan, "IMPLS", scan.IMPLS + ("one_step_late",))

    def core(a, b, *, reverse):
        late = jnp.concatenate([jnp.zeros_like(b[:1]), b[:-1]])
        return recurrence._sequential_core(a, late, reverse=reverse)

    recurrence.register_impl("one_step_late", core)
    return "one_step_late"


def test_numpy_reference_matches_autodiff_in_float64(scan):
    rng = np.random.default_rng(3)
    a = 0.95 * np.exp(1j * rng.uniform(-np.pi, np.pi, 6))
    b = rng.normal(size=(2, 40, 6)) + 1j * rng.normal(size=(2, 40, 6))
    h, grad_a, grad_b = scan.numpy_recurrence_and_grads(a, b)

    def loss(a, b):
        h = linear_recurrence(a, b, axis=1, impl="sequential")
        return jnp.sum(h.real) + scan.LOSS_IMAG_WEIGHT * jnp.sum(h.imag)

    with jax.enable_x64(True):
        a64, b64 = jnp.asarray(a), jnp.asarray(b)
        want_h = linear_recurrence(a64, b64, axis=1, impl="sequential")
        want_a, want_b = jax.grad(loss, argnums=(0, 1))(a64, b64)
    np.testing.assert_allclose(h, want_h, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_a, want_a, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(grad_b, want_b, rtol=1e-12, atol=1e-12)


def test_every_impl_passes_the_check(scan):
    impls = list(scan.IMPLS)  # pallas runs interpreted on CPU
    errors = scan.check_recurrence(impls, [1, 300], batch=2, P=8, chunk_size=16, max_rel_error=1e-4)
    assert set(errors) == set(impls)
    for impl in impls:
        for length in (1, 300):
            assert set(errors[impl][length]) == {"h", "grad_a", "grad_b"}
            assert max(errors[impl][length].values()) < 1e-4, (impl, length)


def test_a_wrong_impl_stops_the_benchmark_and_writes_nothing(scan, one_step_late, tmp_path):
    with pytest.raises(ValueError, match=r"one_step_late at L=300") as info:
        scan.check_recurrence(
            ["sequential", one_step_late], [300], 2, 8, 16, scan.DEFAULT_MAX_REL_ERROR
        )
    assert "sequential" not in str(info.value)

    out = tmp_path / "scan.json"
    with pytest.raises(SystemExit) as exit_info:
        scan.main(
            ["--quick", "--no-layer", "--impls", "sequential", one_step_late, "--out", str(out)]
        )
    assert "one_step_late" in str(exit_info.value.code)  # sys.exit(message) exits 1
    assert not out.exists() and not out.with_suffix(".png").exists()
