"""Initializers for S5: HiPPO-N eigenvalues/eigenvectors, B̃, C̃ and log Δ.

HiPPO-N is the normal part of the HiPPO-LegS matrix. It is computed once, on the
host in float64 NumPy, because it is a constant of the architecture.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.nn import initializers

C_INITS = ("trunc_standard_normal", "lecun_normal", "complex_normal")


def make_hippo(n: int) -> np.ndarray:
    """HiPPO-LegS matrix: A[i,k] = -sqrt(2i+1)sqrt(2k+1) (i > k), -(i+1) (i = k), 0 (i < k)."""
    p = np.sqrt(1.0 + 2.0 * np.arange(n))
    a = p[:, None] * p[None, :]
    a = np.tril(a) - np.diag(np.arange(n))
    return -a


def make_hippo_normal(n: int) -> np.ndarray:
    """S = A + P Pᵀ with P_i = sqrt(i + 1/2): -1/2 on the diagonal plus a skew-symmetric part."""
    p = np.sqrt(np.arange(n) + 0.5)
    return make_hippo(n) + p[:, None] * p[None, :]


def make_dplr_hippo(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition S = V diag(Λ) Vᴴ of HiPPO-N (size n).

    Returns Λ (n,) complex with Re Λ = mean(diag S) = -1/2, and unitary V (n, n).
    Im Λ and V come from the Hermitian matrix -i (S - diag S), so eigh applies;
    eigenvalues are sorted by imaginary part, so they come in conjugate pairs
    ±ω split across the two halves.
    """
    s = make_hippo_normal(n)
    s_diag = np.diagonal(s)
    lambda_re = np.full(n, np.mean(s_diag))
    lambda_im, v = np.linalg.eigh(-1j * (s - np.diag(s_diag)))
    return lambda_re + 1j * lambda_im, v


@functools.lru_cache(maxsize=32)
def hippo_n_init(state_size: int, blocks: int = 1, conj_sym: bool = True):
    """Block-diagonal HiPPO-N initialization of S5's state matrix.

    Args:
      state_size: size of the (real-valued equivalent) state before conjugate
        symmetry halves it; `blocks` must divide it.
      blocks: J, the number of HiPPO-N blocks on the diagonal.
      conj_sym: keep one eigenvalue of each conjugate pair.

    Returns:
      Lambda (P,) complex128, V (state_size, P), Vinv (P, state_size), where
      P = state_size // 2 under conj_sym, else state_size. B̃ = Vinv B and
      C̃ = C V map real B (state_size, H) and C (H, state_size) to the eigenbasis.
    """
    if state_size < 1 or blocks < 1:
        raise ValueError(f"state_size and blocks must be positive, got {state_size} and {blocks}.")
    if state_size % blocks:
        raise ValueError(f"blocks={blocks} must divide state_size={state_size}.")
    block = state_size // blocks
    if conj_sym and block % 2:
        raise ValueError(
            f"conj_sym needs an even block size; state_size/blocks = {state_size}/{blocks} "
            f"= {block}."
        )
    lam, v = make_dplr_hippo(block)
    if conj_sym:
        keep = block // 2
        lam, v = lam[:keep], v[:, :keep]
    lam = np.tile(lam, blocks)
    v_full = _block_diag([v] * blocks)
    vinv_full = _block_diag([v.conj().T] * blocks)
    for arr in (lam, v_full, vinv_full):
        arr.flags.writeable = False  # cached (the module asks on every call): keep it immutable
    return lam, v_full, vinv_full


def _block_diag(mats):
    rows = sum(m.shape[0] for m in mats)
    cols = sum(m.shape[1] for m in mats)
    out = np.zeros((rows, cols), mats[0].dtype)
    r = c = 0
    for m in mats:
        out[r : r + m.shape[0], c : c + m.shape[1]] = m
        r, c = r + m.shape[0], c + m.shape[1]
    return out


def _to_re_im(z: jax.Array) -> jax.Array:
    return jnp.stack([z.real, z.imag], axis=-1)


def init_B(key, Vinv, H: int, dtype=jnp.float32) -> jax.Array:
    """B̃ = V⁻¹B with real B (state_size, H) ~ lecun_normal; stored as (P, H, 2)."""
    b = initializers.lecun_normal()(key, (Vinv.shape[1], H), dtype)
    return _to_re_im(jnp.asarray(Vinv, jnp.complex64) @ b).astype(dtype)


def init_C(key, method: str, V, H: int, dtype=jnp.float32) -> jax.Array:
    """One output matrix C̃ (H, P), stored as (H, P, 2).

    trunc_standard_normal: each row truncated-normal with variance 1/state_size
    (lecun_normal per row), then C̃ = C V; lecun_normal: lecun_normal over the
    whole (H, state_size, 2) array, then C̃ = C V; complex_normal: C̃ directly,
    entries with std sqrt(1/2) in each part (unit complex variance), no V.
    """
    full, stored = V.shape
    if method == "trunc_standard_normal":
        # batch_axis=0 gives fan_in = state_size for every row, as a per-row init would.
        c = initializers.lecun_normal(batch_axis=(0,))(key, (H, full, 2), dtype)
    elif method == "lecun_normal":
        c = initializers.lecun_normal()(key, (H, full, 2), dtype)
    elif method == "complex_normal":
        return initializers.normal(stddev=0.5**0.5)(key, (H, stored, 2), dtype)
    else:
        raise ValueError(f"Unknown C_init {method!r}; expected one of {C_INITS}.")
    c = jax.lax.complex(c[..., 0], c[..., 1])
    return _to_re_im(c @ jnp.asarray(V, jnp.complex64)).astype(dtype)


def init_log_step(
    key, P: int, dt_min: float = 1e-3, dt_max: float = 1e-1, dtype=jnp.float32
) -> jax.Array:
    """log Δ (P, 1), uniform in [log dt_min, log dt_max]."""
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"Need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}.")
    u = jax.random.uniform(key, (P, 1), dtype)
    return u * (np.log(dt_max) - np.log(dt_min)) + np.log(dt_min)
