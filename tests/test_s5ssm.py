"""S5SSM against an independent NumPy implementation built from the module's own parameters."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxml.ssm import S5SSM, hippo_n_init

H, STATE, BLOCKS, L, BATCH = 4, 16, 2, 30, 2
# Small modules run eagerly: cheaper than compiling each init/apply once.


def numpy_s5(
    params,
    u,
    *,
    conj_sym,
    bidirectional,
    discretization,
    step_rescale=1.0,
    timesteps=None,
    clip_eigs=False,
):
    """Textbook S5 in complex128: discretize Λ, B̃ with Δ_t, loop x_t = Λ̄_t x_{t-1} + B̄_t u_t."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    lam_re = np.minimum(p["Lambda_re"], -1e-4) if clip_eigs else p["Lambda_re"]
    lam = lam_re + 1j * p["Lambda_im"]
    B = p["B"][..., 0] + 1j * p["B"][..., 1]
    C = p["C"][..., 0] + 1j * p["C"][..., 1]
    D = p["D"]
    delta = step_rescale * np.exp(p["log_step"][:, 0])
    u = np.asarray(u, np.float64)
    batch, length, _ = u.shape
    P = lam.shape[0]
    if timesteps is None:
        timesteps = np.ones((batch, length))

    def disc(dt):
        if discretization == "zoh":
            lam_bar = np.exp(lam * dt)
            return lam_bar, ((lam_bar - 1.0) / lam)[:, None] * B
        bl = 1.0 / (1.0 - dt / 2.0 * lam)
        return bl * (1.0 + dt / 2.0 * lam), (bl * dt)[:, None] * B

    def scan(order, scale):
        xs = np.zeros((batch, length, P), np.complex128)
        for n in range(batch):
            x = np.zeros(P, np.complex128)
            for t in order:
                lam_bar, B_bar = disc(delta * scale(n, t))
                x = lam_bar * x + B_bar @ u[n, t]
                xs[n, t] = x
        return xs

    xs = scan(range(length), lambda n, t: timesteps[n, t])
    if bidirectional:
        gap_to_next = lambda n, t: timesteps[n, t + 1] if t + 1 < length else 1.0
        xs = np.concatenate([xs, scan(range(length - 1, -1, -1), gap_to_next)], axis=-1)
    y = np.einsum("hp,blp->blh", C, xs)
    y = 2.0 * y.real if conj_sym else y.real
    return y + D * u


def make(rng_seed=0, **kw):
    model = S5SSM(state_size=STATE, blocks=BLOCKS, **kw)
    u = jax.random.normal(jax.random.key(rng_seed + 1), (BATCH, L, H))
    variables = model.init(jax.random.key(rng_seed), u)
    return model, variables, u


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
@pytest.mark.parametrize("conj_sym", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_matches_numpy(discretization, conj_sym, bidirectional):
    kw = dict(discretization=discretization, conj_sym=conj_sym, bidirectional=bidirectional)
    model, variables, u = make(**kw, dt_min=0.01, dt_max=0.5)
    y = model.apply(variables, u)
    ref = numpy_s5(variables["params"], u, **kw)
    np.testing.assert_allclose(np.asarray(y), ref, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("C_init", ["trunc_standard_normal", "lecun_normal", "complex_normal"])
def test_param_shapes_and_C_inits(C_init):
    for conj_sym, bidirectional in [(True, False), (False, True)]:
        model, variables, u = make(C_init=C_init, conj_sym=conj_sym, bidirectional=bidirectional)
        p = variables["params"]
        P = STATE // 2 if conj_sym else STATE
        assert model.P == P
        shapes = jax.tree.map(jnp.shape, p)
        assert shapes == {
            "Lambda_re": (P,),
            "Lambda_im": (P,),
            "B": (P, H, 2),
            "C": (H, 2 * P if bidirectional else P, 2),
            "D": (H,),
            "log_step": (P, 1),
        }
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(p))
        assert np.all(np.abs(np.asarray(p["C"])) > 0)
        log_step = np.asarray(p["log_step"])
        assert np.all((log_step >= np.log(1e-3) - 1e-6) & (log_step <= np.log(1e-1) + 1e-6))


def test_irregular_timesteps_match_numpy():
    for bidirectional in [False, True]:
        model, variables, u = make(
            bidirectional=bidirectional, conj_sym=False, dt_min=0.01, dt_max=0.5
        )
        timesteps = jax.random.uniform(jax.random.key(7), (BATCH, L), minval=0.2, maxval=3.0)
        y = model.apply(variables, u, timesteps)
        ref = numpy_s5(
            variables["params"],
            u,
            conj_sym=False,
            bidirectional=bidirectional,
            discretization="zoh",
            timesteps=np.asarray(timesteps),
        )
        np.testing.assert_allclose(np.asarray(y), ref, atol=2e-4, rtol=2e-4)


def test_clip_eigs_and_step_rescale_match_numpy():
    model, variables, u = make(clip_eigs=True, step_rescale=2.0)
    params = dict(variables["params"])
    params["Lambda_re"] = params["Lambda_re"].at[::2].set(0.3)  # unstable without clipping
    y = model.apply({"params": params}, u)
    ref = numpy_s5(
        params,
        u,
        conj_sym=True,
        bidirectional=False,
        discretization="zoh",
        step_rescale=2.0,
        clip_eigs=True,
    )
    np.testing.assert_allclose(np.asarray(y), ref, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("discretization, conj_sym", [("zoh", True), ("bilinear", False)])
def test_step_mode_matches_parallel(discretization, conj_sym):
    model, variables, u = make(discretization=discretization, conj_sym=conj_sym)
    timesteps = jax.random.uniform(jax.random.key(3), (BATCH, L), minval=0.5, maxval=2.0)

    @jax.jit
    def recurrent(u, timesteps):
        def body(state, inputs):
            u_t, dt_t = inputs
            return model.apply(variables, state, u_t, dt_t, method="step")

        state0 = model.initial_state(BATCH)
        _, ys = jax.lax.scan(body, state0, (jnp.swapaxes(u, 0, 1), jnp.swapaxes(timesteps, 0, 1)))
        return jnp.swapaxes(ys, 0, 1)

    y_par = model.apply(variables, u, timesteps)
    np.testing.assert_allclose(
        np.asarray(recurrent(u, timesteps)), np.asarray(y_par), atol=1e-5, rtol=1e-5
    )
    # Regular sampling: no timestep argument at all.
    state, y0 = model.apply(variables, model.initial_state(BATCH), u[:, 0], method="step")
    np.testing.assert_allclose(
        np.asarray(y0), np.asarray(model.apply(variables, u)[:, 0]), atol=1e-5
    )
    assert state.shape == (BATCH, model.P) and jnp.iscomplexobj(state)


def test_step_rescale_on_subsampled_signal():
    """A model evaluated with step_rescale=2 on every other sample tracks the full-rate output."""
    length = 600
    model = S5SSM(state_size=32, blocks=4, dt_min=0.01, dt_max=0.1)
    t = np.arange(length)
    # Smooth input: slow sinusoids on each channel (periods of 100-250 samples).
    u = np.stack(
        [
            np.sin(2 * np.pi * t / p + ph)
            for p, ph in [(100, 0.0), (150, 1.0), (200, 2.0), (250, 0.5)]
        ],
        -1,
    )
    u = jnp.asarray(u[None], jnp.float32)
    variables = model.init(jax.random.key(0), u)
    D = variables["params"]["D"]
    u_half = u[:, ::2]
    # Compare the state-space part only (D·u matches trivially).
    y_full = (model.apply(variables, u) - D * u)[:, ::2]
    y_half = model.clone(step_rescale=2.0).apply(variables, u_half) - D * u_half
    y_naive = model.apply(variables, u_half) - D * u_half  # same weights, wrong sampling rate

    def rel_err(y):
        # Skip the start-up transient, which depends on the (different) first step.
        return float(jnp.linalg.norm(y[:, 50:] - y_full[:, 50:]) / jnp.linalg.norm(y_full[:, 50:]))

    assert rel_err(y_half) < 0.05  # about the half-sample lag of a zero-order hold
    assert rel_err(y_naive) > 5 * rel_err(y_half)


def test_hippo_n_eigenvalues_match_numpy():
    """Λ equals the eigenvalues of A + PPᵀ built here from the HiPPO-LegS formula."""
    N = 8
    A = np.zeros((N, N))
    for n in range(N):
        for k in range(N):
            if n > k:
                A[n, k] = -np.sqrt(2 * n + 1) * np.sqrt(2 * k + 1)
            elif n == k:
                A[n, k] = -(n + 1)
    p = np.sqrt(np.arange(N) + 0.5)
    S = A + np.outer(p, p)
    eig = np.linalg.eigvals(S)
    key = lambda z: (round(z.real, 6), round(z.imag, 6))

    lam, V, Vinv = hippo_n_init(N, blocks=1, conj_sym=False)
    np.testing.assert_allclose(sorted(lam, key=key), sorted(eig, key=key), atol=1e-8)
    np.testing.assert_allclose(V @ np.diag(lam) @ Vinv, S, atol=1e-8)  # S = V Λ V⁻¹
    np.testing.assert_allclose(Vinv @ V, np.eye(N), atol=1e-10)

    # conj_sym keeps one of each conjugate pair; blocks tile the same spectrum.
    lam_half, V_half, _ = hippo_n_init(3 * N, blocks=3, conj_sym=True)
    assert lam_half.shape == (3 * N // 2,) and V_half.shape == (3 * N, 3 * N // 2)
    both = np.concatenate([lam_half[: N // 2], lam_half[: N // 2].conj()])
    np.testing.assert_allclose(sorted(both, key=key), sorted(eig, key=key), atol=1e-8)
    np.testing.assert_allclose(lam_half, np.tile(lam_half[: N // 2], 3))

    # The module's parameters are this spectrum (in float32).
    model, variables, _ = make(conj_sym=False)
    lam_mod = np.asarray(variables["params"]["Lambda_re"]) + 1j * np.asarray(
        variables["params"]["Lambda_im"]
    )
    np.testing.assert_allclose(lam_mod, hippo_n_init(STATE, BLOCKS, conj_sym=False)[0], atol=1e-5)


@pytest.mark.filterwarnings("error")
def test_no_complex_casting_warnings_in_forward_and_backward():
    # Bidirectional + conj_sym + timesteps: every complex path of the module at once.
    model, variables, u = make(bidirectional=True, conj_sym=True)

    def loss(params, u):
        return jnp.sum(model.apply({"params": params}, u, jnp.ones(u.shape[:2])) ** 2)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables["params"], u)
    assert all(jnp.isrealobj(g) and bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads[0]))


def test_bad_options_raise():
    u = jnp.ones((1, 5, H))
    for kw, match in [
        (dict(C_init="zeros"), "C_init"),
        (dict(discretization="euler"), "discretization"),
        (dict(scan_impl="magic"), "scan_impl"),
        (dict(state_size=STATE, blocks=3), "divide"),
        (dict(state_size=6, blocks=2), "even"),
    ]:
        with pytest.raises(ValueError, match=match):
            S5SSM(**{"state_size": STATE, "blocks": BLOCKS, **kw}).init(jax.random.key(0), u)
    model, variables, u = make(bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional"):
        model.apply(variables, model.initial_state(BATCH), u[:, 0], method="step")
    with pytest.raises(flax.errors.ScopeParamShapeError):  # parameters were made for H features
        model.apply(variables, jnp.ones((1, 5, H + 1)))
