"""The ConvS5 layer (Smith, De Mello, Kautz, Linderman & Byeon, NeurIPS 2023).

    x_t = Λ̄ ⊙ x_{t-1} + B̄ * u_t,    y_t = Re(C̃ * x_t) + D ⊙ u_t

with tensor states x_t ∈ C^{h×w×P}, `*` a k×k convolution (B̃: U input channels -> P
complex state channels; C̃: P -> U) and Λ diagonal over the state channels, so the
state transition is pointwise in space. Because it is pointwise, the recurrence runs
independently at every pixel and channel: training computes B̃ * u_t for every t with
one convolution, runs `linear_recurrence` over time, then applies C̃ with one more
convolution. `step` runs the same recurrence one frame at a time for generation.

Initialisation and discretisation are S5's (HiPPO-N eigenvalues, B̃ = V⁻¹B and
C̃ = CV with V acting on the state-channel axis of the kernels, learned log Δ per state,
ZOH or bilinear, conj_sym). Parameters are real arrays, complex ones stored as
[..., 0] = real and [..., 1] = imaginary part, as in `S5SSM`:

  Lambda_re (P,), Lambda_im (P,), B (k_B, k_B, U, P, 2), C (k_C, k_C, P, U, 2), D (U,),
  log_step (P, 1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax
from jax.nn import initializers

from jaxml.ssm import init as ssm_init
from jaxml.ssm.discretize import DISCRETIZATIONS, discretize
from jaxml.ssm.recurrence import available_impls, linear_recurrence

_DIMS = ("NHWC", "HWIO", "NHWC")


def conv2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """'SAME' k×k convolution of (..., h, w, C_in) with a (k, k, C_in, C_out) kernel."""
    lead = x.shape[:-3]
    x = x.reshape((-1,) + x.shape[-3:])
    y = lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DIMS)
    return y.reshape(lead + y.shape[1:])


def init_conv_B(key, Vinv, kernel_size: int, U: int, dtype=jnp.float32) -> jax.Array:
    """B̃ = V⁻¹B on the state axis of a real B (k, k, U, state_size) ~ lecun_normal."""
    b = initializers.lecun_normal(in_axis=(0, 1, 2), out_axis=3)(
        key, (kernel_size, kernel_size, U, Vinv.shape[1]), dtype
    )
    bt = jnp.einsum("pn,ijun->ijup", jnp.asarray(Vinv, jnp.complex64), b)
    return jnp.stack([bt.real, bt.imag], axis=-1).astype(dtype)


def init_conv_C(key, V, kernel_size: int, U: int, dtype=jnp.float32) -> jax.Array:
    """C̃ = CV on the state axis of a complex C (k, k, state_size, U), each part lecun_normal."""
    full = V.shape[0]
    c = initializers.lecun_normal(in_axis=(0, 1, 2), out_axis=3)(
        key, (kernel_size, kernel_size, full, U, 2), dtype
    )
    c = lax.complex(c[..., 0], c[..., 1])
    ct = jnp.einsum("ijno,np->ijpo", c, jnp.asarray(V, jnp.complex64))
    return jnp.stack([ct.real, ct.imag], axis=-1).astype(dtype)


class ConvS5(nn.Module):
    """ConvS5 SSM: (batch, length, h, w, U) -> (batch, length, h, w, U); U from the input.

    Attributes:
      state_size: state channels before conjugate symmetry; the stored (complex) number
        of state channels is P = state_size // 2 with conj_sym, else state_size.
      blocks: J, the number of HiPPO-N blocks used to initialise Λ.
      conj_sym: keep one state of each conjugate pair and output 2·Re(C̃ * x).
      kernel_size_B, kernel_size_C: k of the input and output convolutions (odd).
      discretization: "zoh" or "bilinear".
      dt_min, dt_max: range of the initial step sizes Δ (log-uniform).
      clip_eigs: use min(Re Λ, -1e-4) so the system stays stable.
      scan_impl: `linear_recurrence` implementation ("auto", "associative", ...).
    """

    state_size: int = 32
    blocks: int = 1
    conj_sym: bool = True
    kernel_size_B: int = 3
    kernel_size_C: int = 3
    discretization: str = "zoh"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    clip_eigs: bool = False
    scan_impl: str = "auto"

    @property
    def P(self) -> int:
        """Stored (complex) number of state channels."""
        return self.state_size // 2 if self.conj_sym else self.state_size

    def _check_options(self):
        if self.discretization not in DISCRETIZATIONS:
            raise ValueError(
                f"Unknown discretization {self.discretization!r}; "
                f"expected one of {DISCRETIZATIONS}."
            )
        if self.scan_impl not in available_impls():
            raise ValueError(
                f"Unknown scan_impl {self.scan_impl!r}; expected one of {available_impls()}."
            )
        for name in ("kernel_size_B", "kernel_size_C"):
            k = getattr(self, name)
            if k < 1 or k % 2 == 0:
                raise ValueError(f"ConvS5 {name} must be a positive odd number, got {k}.")

    @nn.compact
    def _ssm(self, U: int):
        """Creates (or fetches) the parameters; returns Λ (P,), B̃, C̃ (complex kernels), D, Δ."""
        self._check_options()
        lam, V, Vinv = ssm_init.hippo_n_init(self.state_size, self.blocks, self.conj_sym)
        P = lam.shape[0]
        if self.has_variable("params", "B") and self.get_variable("params", "B").shape[2] != U:
            raise ValueError(
                f"ConvS5 was initialised for {self.get_variable('params', 'B').shape[2]} input "
                f"channels, got inputs with {U}."
            )
        Lambda_re = self.param("Lambda_re", lambda _: jnp.asarray(lam.real, jnp.float32))
        Lambda_im = self.param("Lambda_im", lambda _: jnp.asarray(lam.imag, jnp.float32))
        B = self.param("B", lambda k: init_conv_B(k, Vinv, self.kernel_size_B, U))
        C = self.param("C", lambda k: init_conv_C(k, V, self.kernel_size_C, U))
        D = self.param("D", nn.initializers.normal(stddev=1.0), (U,))
        log_step = self.param(
            "log_step", lambda k: ssm_init.init_log_step(k, P, self.dt_min, self.dt_max)
        )
        if self.clip_eigs:
            Lambda_re = jnp.minimum(Lambda_re, -1e-4)
        Lambda = lax.complex(Lambda_re, Lambda_im)
        C_scale = 2.0 if self.conj_sym else 1.0  # the dropped conjugates add the same real part
        return Lambda, B, C_scale * C, D, jnp.exp(log_step[:, 0])

    def _discretized(self, U: int):
        Lambda, B, C, D, step = self._ssm(U)
        Lambda_bar, gamma = discretize(Lambda, step, self.discretization)
        return Lambda_bar, gamma, B, C, D

    @staticmethod
    def _input_map(u, B, gamma):
        """B̄ * u = γ ⊙ (B̃ * u): one real convolution to 2P channels, then complex scaling."""
        k, _, U, P, _ = B.shape
        kernel = jnp.concatenate([B[..., 0], B[..., 1]], axis=-1)  # (k, k, U, 2P)
        bu = conv2d(u, kernel.astype(u.dtype))
        return gamma * lax.complex(bu[..., :P], bu[..., P:])

    @staticmethod
    def _output_map(x, C):
        """Re(C̃ * x) = C_re * Re x - C_im * Im x, as one real convolution of [Re x, Im x]."""
        kernel = jnp.concatenate([C[..., 0], -C[..., 1]], axis=2)  # (k, k, 2P, U)
        return conv2d(jnp.concatenate([x.real, x.imag], axis=-1), kernel)

    def _check_input(self, u, what: str, ndim: int):
        if u.ndim != ndim:
            shape = "(batch, length, h, w, channels)" if ndim == 5 else "(batch, h, w, channels)"
            raise ValueError(f"ConvS5 {what} expects {shape}, got shape {tuple(u.shape)}.")

    def __call__(
        self,
        u: jax.Array,
        *,
        reset: jax.Array | None = None,
        h0: jax.Array | None = None,
        return_state: bool = False,
    ):
        """Parallel mode over a whole sequence.

        Args:
          u: (batch, length, h, w, U) real inputs.
          reset: optional (batch, length) bool; where True the state restarts from B̄ * u_t
            (an episode boundary).
          h0: optional (batch, h, w, P) complex state before the first frame (e.g. the
            state `step` or an earlier call ended in); zeros when None.
          return_state: also return the state after the last frame, (batch, h, w, P).

        Returns:
          y (batch, length, h, w, U), and the last state when `return_state`.
        """
        self._check_input(u, "input", 5)
        Lambda_bar, gamma, B, C, D = self._discretized(u.shape[-1])
        batch, length, h, w, _ = u.shape
        if reset is not None and jnp.shape(reset) != (batch, length):
            raise ValueError(
                f"ConvS5 reset must have shape (batch, length) = {(batch, length)}, "
                f"got {tuple(jnp.shape(reset))}."
            )
        if h0 is not None and jnp.shape(h0) != (batch, h, w, self.P):
            raise ValueError(
                f"ConvS5 h0 must have shape (batch, h, w, P) = {(batch, h, w, self.P)}, "
                f"got {tuple(jnp.shape(h0))}."
            )
        bu = self._input_map(u, B, gamma)
        x = linear_recurrence(Lambda_bar, bu, h0, axis=1, reset=reset, impl=self.scan_impl)
        y = self._output_map(x, C) + D * u
        return (y, x[:, -1]) if return_state else y

    # ------------------------------------------------------------------
    # Recurrent mode (autoregressive generation)
    # ------------------------------------------------------------------

    def initial_state(self, batch_size: int, h: int, w: int, dtype=jnp.complex64) -> jax.Array:
        """Zero state (batch_size, h, w, P) for `step`; needs no parameters."""
        return jnp.zeros((batch_size, h, w, self.P), dtype)

    def step(self, state: jax.Array, u_t: jax.Array):
        """One frame: (state (batch, h, w, P), u_t (batch, h, w, U)) -> (new state, y_t).

        Equals `__call__` frame by frame. Use as
        `module.apply(variables, state, u_t, method="step")`.
        """
        self._check_input(u_t, "step input", 4)
        expected = u_t.shape[:-1] + (self.P,)
        if tuple(state.shape) != expected:
            raise ValueError(
                f"ConvS5 step state must have shape (batch, h, w, P) = {expected}, "
                f"got {tuple(state.shape)}."
            )
        Lambda_bar, gamma, B, C, D = self._discretized(u_t.shape[-1])
        state = Lambda_bar * state + self._input_map(u_t, B, gamma)
        return state, self._output_map(state, C) + D * u_t
