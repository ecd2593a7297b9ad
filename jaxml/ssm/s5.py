"""The S5 state-space layer (Smith, Warrington & Linderman, ICLR 2023).

    x_t = Λ̄ x_{t-1} + B̄ u_t,    y_t = Re(C̃ x_t) + D ⊙ u_t

with a diagonal complex Λ (HiPPO-N init), learnable log Δ per state, and the
recurrence run by `linear_recurrence`. Parameters are real arrays (complex
ones stored as [..., 0] = real, [..., 1] = imaginary part); complex numbers
only live inside the forward pass, built with `lax.complex` so that gradients
flow back to the real parameters without complex-to-real casts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from jaxml.ssm import init as ssm_init
from jaxml.ssm.discretize import DISCRETIZATIONS, discretize
from jaxml.ssm.recurrence import available_impls, linear_recurrence


def _complex(x: jax.Array) -> jax.Array:
    return lax.complex(x[..., 0], x[..., 1])


def _apply_complex(u: jax.Array, M: jax.Array) -> jax.Array:
    """(..., H) real @ (P, H) complex -> (..., P) complex, as two real matmuls."""
    return lax.complex(u @ M.real.T, u @ M.imag.T)


def _real_output(x: jax.Array, C: jax.Array) -> jax.Array:
    """Re(C x) for complex x (..., P) and C (H, P), as two real matmuls."""
    return x.real @ C.real.T - x.imag @ C.imag.T


class S5SSM(nn.Module):
    """S5 SSM: (batch, length, H) -> (batch, length, H); H is taken from the input.

    Attributes:
      state_size: state size of the model before conjugate symmetry; the stored
        state size is P = state_size // 2 with conj_sym, else state_size (the
        official CLI's `ssm_size_base`).
      blocks: J, number of HiPPO-N blocks used to initialize Λ.
      conj_sym: keep one state of each conjugate pair and output 2·Re(C̃x).
      C_init: "trunc_standard_normal", "lecun_normal" or "complex_normal".
      discretization: "zoh" or "bilinear".
      dt_min, dt_max: range of the initial step sizes Δ (log-uniform).
      clip_eigs: use min(Re Λ, -1e-4) so the system stays stable.
      bidirectional: also run the recurrence backwards in time (C has 2P columns).
      step_rescale: multiplies every Δ; evaluate at another sampling rate
        (e.g. 2.0 on a 2× subsampled signal) without retraining.
      scan_impl: `linear_recurrence` implementation ("auto", "associative", ...).
    """

    state_size: int = 256
    blocks: int = 8
    conj_sym: bool = True
    C_init: str = "trunc_standard_normal"
    discretization: str = "zoh"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    clip_eigs: bool = False
    bidirectional: bool = False
    step_rescale: float = 1.0
    scan_impl: str = "auto"

    @property
    def P(self) -> int:
        """Stored (complex) state size."""
        return self.state_size // 2 if self.conj_sym else self.state_size

    def _check_options(self):
        if self.C_init not in ssm_init.C_INITS:
            raise ValueError(f"Unknown C_init {self.C_init!r}; expected one of {ssm_init.C_INITS}.")
        if self.discretization not in DISCRETIZATIONS:
            raise ValueError(
                f"Unknown discretization {self.discretization!r}; "
                f"expected one of {DISCRETIZATIONS}."
            )
        if self.scan_impl not in available_impls():
            raise ValueError(
                f"Unknown scan_impl {self.scan_impl!r}; expected one of {available_impls()}."
            )

    @nn.compact
    def _ssm(self, H: int):
        """Creates (or fetches) the parameters; returns Λ, B̃, C̃, D and Δ."""
        self._check_options()
        lam, V, Vinv = ssm_init.hippo_n_init(self.state_size, self.blocks, self.conj_sym)
        P = lam.shape[0]

        Lambda_re = self.param("Lambda_re", lambda _: jnp.asarray(lam.real, jnp.float32))
        Lambda_im = self.param("Lambda_im", lambda _: jnp.asarray(lam.imag, jnp.float32))
        B = self.param("B", lambda k: ssm_init.init_B(k, Vinv, H))

        def c_init(key):
            if not self.bidirectional:
                return ssm_init.init_C(key, self.C_init, V, H)
            # Two independent output maps, one per direction, side by side.
            k1, k2 = jax.random.split(key)
            return jnp.concatenate(
                [ssm_init.init_C(k1, self.C_init, V, H), ssm_init.init_C(k2, self.C_init, V, H)],
                axis=1,
            )

        C = self.param("C", c_init)
        D = self.param("D", nn.initializers.normal(stddev=1.0), (H,))
        log_step = self.param(
            "log_step", lambda k: ssm_init.init_log_step(k, P, self.dt_min, self.dt_max)
        )

        if self.clip_eigs:
            Lambda_re = jnp.minimum(Lambda_re, -1e-4)
        Lambda = lax.complex(Lambda_re, Lambda_im)
        C_tilde = _complex(C)
        if self.conj_sym:
            C_tilde = 2.0 * C_tilde  # the dropped conjugate states add the same real part
        step = self.step_rescale * jnp.exp(log_step[:, 0])
        return Lambda, _complex(B), C_tilde, D, step

    def __call__(self, u: jax.Array, timesteps: jax.Array | None = None) -> jax.Array:
        """Runs the SSM over a sequence.

        Args:
          u: inputs (batch, length, H) (any leading dims work).
          timesteps: optional (batch, length) time elapsed since the previous
            sample, in units of the regular sampling interval, for irregularly
            sampled sequences: step t uses Δ·timesteps[t]. (timesteps[..., 0]
            only scales the first input; 1 is the natural value.) The backward
            direction of a bidirectional SSM uses the gap to the next sample.

        Returns:
          y with the shape of u.
        """
        Lambda, B_tilde, C_tilde, D, step = self._ssm(u.shape[-1])
        time_axis = u.ndim - 2
        P = Lambda.shape[0]

        def run(dt_scale, reverse):
            if dt_scale is None:
                # One Λ̄ for all steps: fold γ into B̄ = γ B̃ before touching the sequence.
                Lambda_bar, gamma = discretize(Lambda, step, self.discretization)
                b = _apply_complex(u, gamma[:, None] * B_tilde)
            else:
                # A Λ̄_t per step; apply γ_t to B̃u_t rather than build a B̄_t per step.
                Lambda_bar, gamma = discretize(
                    Lambda, step * dt_scale[..., None], self.discretization
                )
                b = gamma * _apply_complex(u, B_tilde)
            return linear_recurrence(
                Lambda_bar, b, axis=time_axis, reverse=reverse, impl=self.scan_impl
            )

        if timesteps is not None:
            timesteps = jnp.broadcast_to(jnp.asarray(timesteps, u.dtype), u.shape[:-1])
        x = run(timesteps, reverse=False)
        y = _real_output(x, C_tilde[:, :P])
        if self.bidirectional:
            bwd_steps = None
            if timesteps is not None:
                # Backwards, step t spans the gap to sample t+1; the last one gets 1.
                ones = jnp.ones_like(lax.slice_in_dim(timesteps, 0, 1, axis=-1))
                bwd_steps = jnp.concatenate(
                    [lax.slice_in_dim(timesteps, 1, None, axis=-1), ones], axis=-1
                )
            x_bwd = run(bwd_steps, reverse=True)
            y = y + _real_output(x_bwd, C_tilde[:, P:])
        return y + D * u

    # ------------------------------------------------------------------
    # Recurrent mode (autoregressive inference)
    # ------------------------------------------------------------------

    def initial_state(self, batch_size: int, dtype=jnp.complex64) -> jax.Array:
        """Zero state (batch_size, P) for `step`; needs no parameters."""
        return jnp.zeros((batch_size, self.P), dtype)

    def step(self, state: jax.Array, u_t: jax.Array, timestep: jax.Array | None = None):
        """One recurrent step: (state (batch, P), u_t (batch, H)) -> (new state, y_t (batch, H)).

        Matches `__call__` step by step (causal, so not for bidirectional SSMs).
        `timestep` (batch,) plays the role of `timesteps[:, t]` in `__call__`.
        Use as `model.apply(variables, state, u_t, method="step")`.
        """
        if self.bidirectional:
            raise ValueError("step() is causal; a bidirectional S5SSM has no recurrent mode.")
        Lambda, B_tilde, C_tilde, D, step = self._ssm(u_t.shape[-1])
        dt = step if timestep is None else step * jnp.asarray(timestep, u_t.dtype)[..., None]
        Lambda_bar, gamma = discretize(Lambda, dt, self.discretization)
        state = Lambda_bar * state + gamma * _apply_complex(u_t, B_tilde)
        y_t = _real_output(state, C_tilde) + D * u_t
        return state, y_t
