"""EDM2 post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of
Diffusion Models", Sec. 3 and App. C): track two power-function EMAs during training, save
their snapshots, and afterwards reconstruct the EMA of any relative width by least squares.

Power-function EMA with exponent γ, at training time t (here: updates done):

    θ̂_γ(t) = ((γ+1) / t^(γ+1)) ∫₀ᵗ τ^γ θ(τ) dτ,  per update  β_t = (1 − 1/t)^(γ+1).

The per-update form is exact for the piecewise-constant parameter path (θ(τ) = θ_s on
(s−1, s]): the EMA after T updates weighs θ_s by (s^(γ+1) − (s−1)^(γ+1)) / T^(γ+1), which is
the integral of the profile p_{γ,T}(τ) = (γ+1) τ^γ / T^(γ+1) over (s−1, s]. So matching
continuous profiles in L2 also matches the per-update weights.

The width is the profile's standard deviation relative to t:
σ_rel = sqrt((γ+1) / ((γ+2)² (γ+3))); γ ≥ 0 gives σ_rel ≤ sqrt(1/12) ≈ 0.2887.
EDM2 tracks σ_rel = 0.05 and 0.10 (γ ≈ 16.97 and 6.94).

Reconstruction: with snapshots (t_i, γ_i), solve A x = b where A_ij = <p_i, p_j> and
b_i = <p_i, p_target> (closed form below), then θ̂_target ≈ Σ_i x_i θ̂_i.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import traverse_util
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)

MAX_SIGMA_REL = math.sqrt(1.0 / 12.0)  # γ = 0: the uniform average over all of training
DEFAULT_SIGMA_RELS = (0.05, 0.10)  # EDM2's two tracked profiles
SNAPSHOT_DIR = "ema_snapshots"
_SNAPSHOT_NAME = re.compile(r"step_(\d+)\.npz")


class PosthocEMAError(ValueError):
    """Bad post-hoc EMA input (a width out of range, no snapshots to reconstruct from)."""


# ---------------------------------------------------------------- widths and exponents


def gamma_to_sigma_rel(gamma) -> np.ndarray:
    """Relative standard deviation of the power-function profile with exponent γ."""
    g = np.asarray(gamma, np.float64)
    return np.sqrt((g + 1) / ((g + 2) ** 2 * (g + 3)))


def check_sigma_rels(sigma_rels: Sequence[float], name: str = "sigma_rel") -> tuple[float, ...]:
    """The widths as floats, each in (0, sqrt(1/12)); else PosthocEMAError naming the bad one."""
    out = []
    for s in sigma_rels:
        try:
            s = float(s)
        except (TypeError, ValueError):
            raise PosthocEMAError(f"{name}: {s!r} is not a number") from None
        if not 0.0 < s < MAX_SIGMA_REL:
            raise PosthocEMAError(
                f"{name}={s} is out of range: a power-function EMA width must be in "
                f"(0, {MAX_SIGMA_REL:.4f}) (sqrt(1/12) is the plain average of all of training)"
            )
        out.append(s)
    if not out:
        raise PosthocEMAError(f"{name}: give at least one width")
    return tuple(out)


def sigma_rel_to_gamma(sigma_rel) -> np.ndarray:
    """Exponent γ ≥ 0 of the profile with width σ_rel (inverse of gamma_to_sigma_rel).

    σ_rel⁻² = (γ+2)²(γ+3)/(γ+1) is the cubic γ³ + 7γ² + (16 − σ⁻²)γ + (12 − σ⁻²) = 0; for
    σ_rel < sqrt(1/12) it has exactly one root γ > 0 (its value at 0 is negative and it is
    increasing beyond), found by Newton's method from above (monotone: the cubic is convex there).
    """
    s = np.asarray(sigma_rel, np.float64)
    if np.any(~((s > 0) & (s < MAX_SIGMA_REL))):
        raise PosthocEMAError(f"sigma_rel must be in (0, {MAX_SIGMA_REL:.4f}), got {sigma_rel}")
    c = s**-2
    # Upper bound: for γ ≥ 0, (γ+2)²(γ+3)/(γ+1) > γ², so the root is below sqrt(c).
    g = np.sqrt(c)
    for _ in range(100):
        f = ((g + 7) * g + 16 - c) * g + 12 - c
        df = (3 * g + 14) * g + 16 - c
        step = f / df
        g = g - step
        if np.all(np.abs(step) <= 1e-15 * np.maximum(g, 1.0)):
            break
    return g


def power_ema_beta(step, gamma):
    """β for the update that makes `step` updates done (step ≥ 1; β = 0 at step 1)."""
    t = jnp.asarray(step, jnp.float32)
    return jnp.power(1.0 - 1.0 / t, gamma + 1.0)


# ---------------------------------------------------------------- closed-form profiles


def profile_inner_products(t_a, gamma_a, t_b, gamma_b) -> np.ndarray:
    """<p_{γa,ta}, p_{γb,tb}> = ∫ p_a p_b dτ, broadcast over the inputs (float64).

    With ta ≤ tb: (γa+1)(γb+1) / ((γa+γb+1) tb) · (ta/tb)^γb, and symmetric otherwise.
    """
    t_a, g_a, t_b, g_b = (np.asarray(x, np.float64) for x in (t_a, gamma_a, t_b, gamma_b))
    a_first = t_a <= t_b
    t_short, t_long = np.where(a_first, t_a, t_b), np.where(a_first, t_b, t_a)
    g_long = np.where(a_first, g_b, g_a)
    return (g_a + 1) * (g_b + 1) / ((g_a + g_b + 1) * t_long) * (t_short / t_long) ** g_long


def solve_coefficients(in_steps, in_gammas, out_step, out_gammas) -> np.ndarray:
    """Least-squares weights (n_in, n_out): θ̂(out_step, γ_out_j) ≈ Σ_i x_ij θ̂(in_step_i, γ_in_i).

    Each column is rescaled to sum to 1 (as EDM2 does), so a constant parameter stays put.
    """
    in_steps, in_gammas = (np.asarray(x, np.float64).reshape(-1) for x in (in_steps, in_gammas))
    out_gammas = np.asarray(out_gammas, np.float64).reshape(-1)
    a = profile_inner_products(in_steps[:, None], in_gammas[:, None], in_steps, in_gammas)
    b = profile_inner_products(in_steps[:, None], in_gammas[:, None], float(out_step), out_gammas)
    try:
        x = np.linalg.solve(a, b)
    except np.linalg.LinAlgError:  # duplicate snapshots: fall back to the minimum-norm solution
        x = np.linalg.lstsq(a, b, rcond=None)[0]
    return x / np.sum(x, axis=0, keepdims=True)


def profile_step_weights(step: int, gamma: float) -> np.ndarray:
    """Weight of the params after each update s = 1..step in the EMA at `step` (closed form)."""
    s = np.arange(1, step + 1, dtype=np.float64)
    return (s / step) ** (gamma + 1) - ((s - 1) / step) ** (gamma + 1)


# ---------------------------------------------------------------- the state and its update


class PowerEMA(flax.struct.PyTreeNode):
    """The tracked power-function EMAs: one param tree per width (widths static)."""

    averages: tuple
    sigma_rels: tuple = flax.struct.field(pytree_node=False, default=())


def init_power_ema(params, sigma_rels: Sequence[float]) -> PowerEMA | None:
    """None when no widths are tracked (a state without post-hoc EMA)."""
    if not sigma_rels:
        return None
    sigma_rels = check_sigma_rels(sigma_rels, "posthoc_sigma_rels")
    return PowerEMA(averages=tuple(params for _ in sigma_rels), sigma_rels=sigma_rels)


def update_power_ema(power_ema: PowerEMA, params, step) -> PowerEMA:
    """After the update that makes `step` updates done (traced int ≥ 1)."""
    averages = []
    for sigma_rel, avg in zip(power_ema.sigma_rels, power_ema.averages, strict=True):
        beta = power_ema_beta(step, float(sigma_rel_to_gamma(sigma_rel)))
        averages.append(
            jax.tree.map(lambda e, p, b=beta: (b * e + (1.0 - b) * p).astype(e.dtype), avg, params)
        )
    return power_ema.replace(averages=tuple(averages))


def tracked_sigma_rels(config) -> tuple[float, ...]:
    """The widths to track from config.ema.{posthoc_snapshot_every, posthoc_sigma_rels};
    () when snapshots are off (the default). Raises PosthocEMAError on a bad value."""
    ema = config.get("ema") or {}
    every = ema.get("posthoc_snapshot_every", 0) or 0
    if not isinstance(every, int) or every < 0:
        raise PosthocEMAError(
            f"config.ema.posthoc_snapshot_every must be an integer >= 0 (0 = off), got {every!r}"
        )
    if not every:
        return ()
    sigma_rels = ema.get("posthoc_sigma_rels", DEFAULT_SIGMA_RELS)
    sigma_rels = check_sigma_rels(sigma_rels, "config.ema.posthoc_sigma_rels")
    if len(set(sigma_rels)) != len(sigma_rels):
        raise PosthocEMAError(f"config.ema.posthoc_sigma_rels has duplicates: {sigma_rels}")
    return sigma_rels


# ---------------------------------------------------------------- snapshots on disk


def _to_host(tree) -> Any:
    """NumPy copy of a tree; arrays sharded over processes are gathered (every process calls)."""

    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(get, tree)


def save_snapshot(directory, step: int, power_ema: PowerEMA) -> epath.Path | None:
    """Writes <directory>/step_<step>.npz on process 0 (temp file, then rename); returns it."""
    averages = _to_host(power_ema.averages)
    if jax.process_index() != 0:
        return None
    arrays = {
        "step": np.int64(step),
        "sigma_rels": np.asarray(power_ema.sigma_rels, np.float64),
    }
    for i, avg in enumerate(averages):
        for key, value in traverse_util.flatten_dict(avg, sep="/").items():
            arrays[f"{i}/{key}"] = value
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    directory = epath.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step_{step:08d}.npz"
    tmp = directory / f".{path.name}.tmp{os.getpid()}"
    tmp.write_bytes(buffer.getvalue())
    tmp.rename(path)
    return path


class SnapshotWriter:
    """Saves the state's PowerEMA every `every` updates (and at the last step) to
    <workdir>/ema_snapshots/. `from_config` gives None when snapshots are off."""

    def __init__(self, directory, every: int):
        self.directory, self.every = epath.Path(directory), every

    @classmethod
    def from_config(cls, workdir, config, state) -> SnapshotWriter | None:
        if not tracked_sigma_rels(config):
            return None
        if getattr(state, "posthoc_ema", None) is None:
            raise PosthocEMAError(
                "config.ema.posthoc_snapshot_every is set but the train state tracks no "
                "power-function EMA: build it with create_train_state(posthoc_sigma_rels="
                "posthoc_ema.tracked_sigma_rels(config))"
            )
        return cls(epath.Path(workdir) / SNAPSHOT_DIR, int(config.ema.posthoc_snapshot_every))

    def maybe_save(self, step: int, state, *, last: bool = False):
        if step % self.every == 0 or last:
            save_snapshot(self.directory, step, state.posthoc_ema)


def list_snapshots(directory) -> list[tuple[int, epath.Path]]:
    """(step, path) of the snapshots in `directory`, by step."""
    directory = epath.Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _SNAPSHOT_NAME.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def load_snapshot(path) -> tuple[int, tuple[float, ...], list[dict[str, np.ndarray]]]:
    """(step, sigma_rels, [flat {"a/b/c": array} per width]) of one snapshot file."""
    with epath.Path(path).open("rb") as f, np.load(f) as data:
        sigma_rels = tuple(float(s) for s in data["sigma_rels"])
        flats: list[dict] = [{} for _ in sigma_rels]
        for key in data.files:
            head, _, rest = key.partition("/")
            if rest:
                flats[int(head)][rest] = data[key]
        return int(data["step"]), sigma_rels, flats


def reconstruct(
    directory, sigma_rels: Sequence[float], step: int | None = None
) -> tuple[int, dict[float, Any]]:
    """EMA params of each width in `sigma_rels` at snapshot `step` (default: the last one).

    Uses every snapshot at or before `step`; streams over the files (one in memory at a time).
    Returns (step, {sigma_rel: nested params dict of float32 NumPy arrays}).
    """
    sigma_rels = check_sigma_rels(sigma_rels)
    snapshots = [(s, p) for s, p in list_snapshots(directory) if s > 0]
    if not snapshots:
        raise PosthocEMAError(
            f"no EMA snapshots (step_*.npz) in {directory}: train with "
            "--config.ema.posthoc_snapshot_every=N (N > 0) first"
        )
    if step is None:
        step = snapshots[-1][0]
    elif step not in {s for s, _ in snapshots}:
        raise PosthocEMAError(
            f"no EMA snapshot at step {step} in {directory} (have {[s for s, _ in snapshots]})"
        )
    snapshots = [(s, p) for s, p in snapshots if s <= step]
    # One pass for the widths each file holds (cheap: np.load is lazy), one for the sums.
    in_steps, in_sigmas = [], []
    for s, path in snapshots:
        with epath.Path(path).open("rb") as f, np.load(f) as data:
            for sigma in data["sigma_rels"]:
                in_steps.append(s)
                in_sigmas.append(float(sigma))
    coefs = solve_coefficients(
        in_steps, sigma_rel_to_gamma(in_sigmas), step, sigma_rel_to_gamma(sigma_rels)
    )
    sums: list[dict | None] = [None] * len(sigma_rels)
    row = 0
    for _, path in snapshots:
        _, _, flats = load_snapshot(path)
        for flat in flats:
            for j in range(len(sigma_rels)):
                scaled = {k: coefs[row, j] * v.astype(np.float64) for k, v in flat.items()}
                sums[j] = scaled if sums[j] is None else {k: sums[j][k] + scaled[k] for k in scaled}
            row += 1
    results = {
        sigma: traverse_util.unflatten_dict(
            {k: v.astype(np.float32) for k, v in total.items()}, sep="/"
        )
        for sigma, total in zip(sigma_rels, sums, strict=True)
    }
    return step, results
