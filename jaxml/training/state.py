"""The train state: one PyTree holding everything a restart needs."""

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jaxml.parallel import sharding
from jaxml.training.posthoc_ema import PowerEMA, init_power_ema


class TrainState(flax.struct.PyTreeNode):
    """step, params, optimizer state, EMA params, base RNG key and mutable collections.

    `rng` never changes: step k uses fold_in(rng, k), so a resumed run draws the
    same randomness as an uninterrupted one. `model_state` holds the non-param
    collections (e.g. {"batch_stats": ...}); `ema_params` is None without EMA.
    `nonfinite_count` counts steps whose loss or gradients were NaN/Inf (their
    update was skipped); `first_nonfinite_step` is the first such step, -1 if none.
    `posthoc_ema` holds EDM2's power-function EMAs (training/posthoc_ema.py), None if off.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    model_state: Any
    ema_params: Any = None
    nonfinite_count: jax.Array | None = None
    first_nonfinite_step: jax.Array | None = None
    posthoc_ema: PowerEMA | None = None


def create_train_state(
    init_fn: Callable[[jax.Array], Any],
    tx: optax.GradientTransformation,
    rng: jax.Array,
    mesh: Mesh,
    *,
    use_ema: bool = False,
    posthoc_sigma_rels: tuple[float, ...] = (),
    fsdp_min_size: int = 2**14,
    abstract_only: bool = False,
) -> tuple[TrainState, Any]:
    """Initializes the state directly in its sharded layout; returns (state, state_shardings).

    `init_fn(rng) -> variables` (a flax variables dict with a "params" entry).
    `posthoc_sigma_rels`: widths of power-function EMAs to track (post-hoc EMA), () = none.
    With `abstract_only`, the state holds ShapeDtypeStructs (a restore target), no arrays.
    """
    init_rng, train_rng = jax.random.split(rng)

    def init(init_rng, train_rng):
        variables = dict(init_fn(init_rng))
        params = variables.pop("params")
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            rng=train_rng,
            model_state=variables,
            ema_params=params if use_ema else None,
            nonfinite_count=jnp.zeros((), jnp.int32),
            first_nonfinite_step=jnp.full((), -1, jnp.int32),
            posthoc_ema=init_power_ema(params, posthoc_sigma_rels),
        )

    abstract = jax.eval_shape(init, init_rng, train_rng)
    shardings = sharding.state_shardings(abstract, mesh, fsdp_min_size)
    if abstract_only:
        state = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings
        )
        return state, shardings
    state = jax.jit(init, out_shardings=shardings)(init_rng, train_rng)
    return state, shardings
