"""ConvS5 against a NumPy loop of its recurrence, built from the module's own parameters.

Values: a float64 NumPy loop x_t = Λ̄ x_{t-1} + B̄ * u_t with explicit convolutions.
Gradients: central finite differences of that NumPy loop (not JAX autodiff of our code).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxml.models.conv_lstm import ConvLSTMVideoModel
from jaxml.models.conv_s5 import ConvS5VideoModel, rollout
from jaxml.ssm.conv_s5 import ConvS5

BATCH, L, HW, U, STATE = 2, 6, 5, 3, 8


def np_conv_same(x, kernel):
    """'SAME' cross-correlation of (N, h, w, Cin) with (k, k, Cin, Cout), any dtype."""
    k = kernel.shape[0]
    p = (k - 1) // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    h, w = x.shape[1:3]
    out = np.zeros(x.shape[:1] + (h, w, kernel.shape[3]), np.result_type(x, kernel))
    for a in range(k):
        for b in range(k):
            out += np.einsum("nhwc,co->nhwo", xp[:, a : a + h, b : b + w], kernel[a, b])
    return out


def numpy_conv_s5(params, u, *, conj_sym, discretization, reset=None, h0=None, clip_eigs=False):
    """Textbook ConvS5 in complex128; returns (y (b, L, h, w, U), last state)."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    lam_re = np.minimum(p["Lambda_re"], -1e-4) if clip_eigs else p["Lambda_re"]
    lam = lam_re + 1j * p["Lambda_im"]
    B = p["B"][..., 0] + 1j * p["B"][..., 1]
    C = p["C"][..., 0] + 1j * p["C"][..., 1]
    delta = np.exp(p["log_step"][:, 0])
    if discretization == "zoh":
        lam_bar = np.exp(lam * delta)
        B_bar = B * ((lam_bar - 1) / lam)
    else:
        bl = 1 / (1 - delta * lam / 2)
        lam_bar = bl * (1 + delta * lam / 2)
        B_bar = B * (bl * delta)
    u = np.asarray(u, np.float64)
    b, length, h, w, _ = u.shape
    x = np.zeros((b, h, w, lam.shape[0]), complex) if h0 is None else np.asarray(h0, complex)
    ys = []
    for t in range(length):
        carry = x * lam_bar
        if reset is not None:
            carry = np.where(np.asarray(reset)[:, t, None, None, None], 0, carry)
        x = carry + np_conv_same(u[:, t], B_bar)
        y = np_conv_same(x, C).real * (2.0 if conj_sym else 1.0) + p["D"] * u[:, t]
        ys.append(y)
    return np.stack(ys, 1), x


def make_layer(key=0, **options):
    layer = ConvS5(state_size=STATE, blocks=2, **options)
    u = jax.random.normal(jax.random.PRNGKey(key), (BATCH, L, HW, HW, U))
    params = layer.init(jax.random.PRNGKey(key + 1), u)["params"]
    # Spread the step sizes so ZOH and bilinear differ visibly.
    params["log_step"] = jnp.linspace(-3.0, 0.0, params["log_step"].size).reshape(-1, 1)
    return layer, params, u


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
@pytest.mark.parametrize("conj_sym", [True, False])
def test_matches_numpy(discretization, conj_sym):
    layer, params, u = make_layer(conj_sym=conj_sym, discretization=discretization)
    y = layer.apply({"params": params}, u)
    ref, _ = numpy_conv_s5(params, u, conj_sym=conj_sym, discretization=discretization)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    assert y.shape == u.shape and y.dtype == jnp.float32


def test_param_shapes():
    layer, params, _ = make_layer(kernel_size_B=3, kernel_size_C=5)
    P = STATE // 2
    shapes = jax.tree.map(jnp.shape, params)
    assert shapes == {
        "Lambda_re": (P,),
        "Lambda_im": (P,),
        "B": (3, 3, U, P, 2),
        "C": (5, 5, P, U, 2),
        "D": (U,),
        "log_step": (P, 1),
    }
    # HiPPO-N init: Re Λ = -1/2 everywhere.
    np.testing.assert_allclose(params["Lambda_re"], -0.5)


@pytest.mark.parametrize("impl", ["associative", "sequential", "chunked"])
def test_impls_resets_and_initial_state_match_numpy(impl):
    layer, params, u = make_layer(scan_impl=impl, conj_sym=True, clip_eigs=True)
    reset = np.zeros((BATCH, L), bool)
    reset[0, 2] = reset[1, 4] = True
    rng = np.random.default_rng(0)
    h0 = rng.normal(size=(BATCH, HW, HW, STATE // 2)) + 1j * rng.normal(size=(BATCH, HW, HW, 4))
    y, last = layer.apply(
        {"params": params}, u, reset=reset, h0=jnp.asarray(h0, jnp.complex64), return_state=True
    )
    ref, ref_last = numpy_conv_s5(
        params, u, conj_sym=True, discretization="zoh", reset=reset, h0=h0, clip_eigs=True
    )
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(last, ref_last, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_gradients_match_numpy_finite_differences(discretization):
    """d loss / d θ along a random direction per parameter (and the input), loss = Σ y·W."""
    layer, params, u = make_layer(conj_sym=True, discretization=discretization)
    weights = np.random.default_rng(1).normal(size=u.shape)

    def jax_loss(params, u):
        return jnp.sum(layer.apply({"params": params}, u) * weights)

    g_params, g_u = jax.grad(jax_loss, argnums=(0, 1))(params, u)

    def np_loss(params64, u64):
        y, _ = numpy_conv_s5(params64, u64, conj_sym=True, discretization=discretization)
        return float(np.sum(y * weights))

    p64 = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    u64 = np.asarray(u, np.float64)
    rng = np.random.default_rng(2)
    eps = 1e-5
    for name in sorted(p64):
        v = rng.normal(size=p64[name].shape)
        plus = {**p64, name: p64[name] + eps * v}
        minus = {**p64, name: p64[name] - eps * v}
        fd = (np_loss(plus, u64) - np_loss(minus, u64)) / (2 * eps)
        got = float(np.sum(np.asarray(g_params[name], np.float64) * v))
        np.testing.assert_allclose(got, fd, rtol=2e-3, atol=1e-3, err_msg=name)
    v = rng.normal(size=u64.shape)
    fd = (np_loss(p64, u64 + eps * v) - np_loss(p64, u64 - eps * v)) / (2 * eps)
    np.testing.assert_allclose(float(np.sum(np.asarray(g_u, np.float64) * v)), fd, rtol=2e-3)


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_step_mode_matches_parallel(discretization):
    layer, params, u = make_layer(discretization=discretization)
    y, last = layer.apply({"params": params}, u, return_state=True)
    state = layer.initial_state(BATCH, HW, HW)
    for t in range(L):
        state, y_t = layer.apply({"params": params}, state, u[:, t], method="step")
        np.testing.assert_allclose(y_t, y[:, t], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state, last, rtol=1e-5, atol=1e-5)


def _video_models():
    s5 = ConvS5VideoModel(d_model=8, n_layers=2, state_size=8, blocks=1)
    lstm = ConvLSTMVideoModel(d_model=8, n_layers=2)
    return [s5, lstm]


@pytest.mark.slow  # ~2.5 min on a loaded 2-core CPU; test_step_mode_matches_parallel: the layer
@pytest.mark.parametrize("model", _video_models(), ids=["conv_s5", "conv_lstm"])
def test_video_model_prefill_then_step_equals_parallel_and_is_causal(model):
    frames = jax.random.uniform(jax.random.PRNGKey(0), (2, 7, 8, 8, 1))
    variables = model.init(jax.random.PRNGKey(1), frames)
    full = model.apply(variables, frames)
    assert full.shape == frames.shape
    logits, states = model.apply(variables, frames[:, :3], method="prefill")
    np.testing.assert_allclose(logits, full[:, :3], rtol=1e-5, atol=1e-5)
    for t in range(3, 7):
        states, logit = model.apply(variables, states, frames[:, t], method="step")
        np.testing.assert_allclose(logit, full[:, t], rtol=1e-4, atol=1e-5)
    # Causality: changing frames after t leaves the outputs up to t unchanged.
    changed = frames.at[:, 4:].set(jax.random.uniform(jax.random.PRNGKey(2), (2, 3, 8, 8, 1)))
    out = model.apply(variables, changed)
    np.testing.assert_array_equal(out[:, :4], full[:, :4])
    assert not np.allclose(out[:, 4:], full[:, 4:])
    # Rollout: the first generated frame is the prediction after the prefix.
    gen = rollout(model, variables, frames[:, :3], 4)
    assert gen.shape == (2, 4, 8, 8, 1)
    np.testing.assert_allclose(gen[:, 0], jax.nn.sigmoid(full[:, 2]), rtol=1e-5, atol=1e-6)


def test_layer_causality_at_every_step():
    layer, params, u = make_layer()
    y = layer.apply({"params": params}, u)
    for t in range(L - 1):
        u2 = u.at[:, t + 1 :].add(1.0)
        y2 = layer.apply({"params": params}, u2)
        np.testing.assert_array_equal(y2[:, : t + 1], y[:, : t + 1])
        assert not np.allclose(y2[:, t + 1], y[:, t + 1])


def test_bad_shapes_raise_clear_errors():
    layer, params, u = make_layer()
    v = {"params": params}
    with pytest.raises(ValueError, match=r"expects \(batch, length, h, w, channels\)"):
        layer.apply(v, u[:, 0])
    with pytest.raises(ValueError, match="initialised for 3 input channels, got inputs with 4"):
        layer.apply(v, jnp.zeros((BATCH, L, HW, HW, 4)))
    with pytest.raises(ValueError, match=r"reset must have shape \(batch, length\)"):
        layer.apply(v, u, reset=jnp.zeros((BATCH,), bool))
    with pytest.raises(ValueError, match=r"h0 must have shape"):
        layer.apply(v, u, h0=jnp.zeros((BATCH, HW, HW, 3), jnp.complex64))
    with pytest.raises(ValueError, match=r"step state must have shape"):
        layer.apply(v, jnp.zeros((BATCH, HW, HW, 3), jnp.complex64), u[:, 0], method="step")
    with pytest.raises(ValueError, match=r"step input expects \(batch, h, w, channels\)"):
        layer.apply(v, layer.initial_state(BATCH, HW, HW), u, method="step")
    with pytest.raises(ValueError, match="kernel_size_B must be a positive odd number"):
        ConvS5(state_size=STATE, kernel_size_B=2).init(jax.random.PRNGKey(0), u)
    with pytest.raises(ValueError, match="Unknown scan_impl"):
        ConvS5(state_size=STATE, scan_impl="fast").init(jax.random.PRNGKey(0), u)
    model = ConvS5VideoModel(d_model=8, n_layers=1, state_size=8)
    with pytest.raises(ValueError, match=r"\(batch, time, height, width, channels\)"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((2, 8, 8, 1)))
    with pytest.raises(ValueError, match="built for 1 channel"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((2, 3, 8, 8, 3)))
