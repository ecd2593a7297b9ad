"""The jitted train and eval steps: explicit shardings in and out, the state donated."""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding

from jaxml.training.posthoc_ema import update_power_ema
from jaxml.training.state import TrainState
from jaxml.training.xla_cpu_options import train_step_compiler_options

# loss_fn(params, model_state, batch, rng) -> (loss, (new_model_state, metrics))
LossFn = Callable[[Any, Any, Any, jax.Array], tuple[jax.Array, tuple[Any, dict]]]
# metric_fn(params, model_state, batch) -> {name: sum over the batch's valid examples}
MetricFn = Callable[[Any, Any, Any], dict]


def ema_update(ema_params, params, decay):
    return jax.tree.map(
        lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype), ema_params, params
    )


def make_train_step(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    *,
    state_shardings: Any,
    batch_sharding: NamedSharding,
    ema_decay: float | Callable[[jax.Array], jax.Array] | None = None,
) -> Callable[[TrainState, Any], tuple[TrainState, dict]]:
    """step(state, batch) -> (state, metrics); metrics are scalars, replicated.

    `ema_decay` is a constant or a function of the step (e.g. EDM's half-life
    with ramp-up); it is used only when the state carries EMA params. The post-hoc
    power-function EMAs are updated whenever the state carries them (`state.posthoc_ema`).

    A step whose loss or gradient norm is NaN/Inf changes nothing but the step
    counter and the non-finite counters: params, optimizer state, model state
    and EMA keep their values, so no NaN ever reaches the model. The loop then
    stops or goes on according to `config.nan_policy`.
    """
    replicated = NamedSharding(batch_sharding.mesh, jax.sharding.PartitionSpec())

    def train_step(state: TrainState, batch):
        rng = jax.random.fold_in(state.rng, state.step)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (model_state, metrics)), grads = grad_fn(state.params, state.model_state, batch, rng)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        def update(operands):
            params, opt_state, ema_params, _, new_model_state, grads = operands
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            if ema_params is not None and ema_decay is not None:
                decay = ema_decay(state.step) if callable(ema_decay) else ema_decay
                ema_params = ema_update(ema_params, params, decay)
            return params, opt_state, ema_params, new_model_state

        def keep(operands):
            return operands[:4]  # the old model state too (e.g. BatchNorm statistics)

        # One conditional rather than a select per leaf: jnp.where(finite, new, old) on the
        # donated state made XLA copy every state leaf first (its old value outlives the
        # in-place update) and compile a select kernel per leaf.
        params, opt_state, ema_params, model_state = jax.lax.cond(
            finite,
            update,
            keep,
            (
                state.params,
                state.opt_state,
                state.ema_params,
                state.model_state,
                model_state,
                grads,
            ),
        )
        nonfinite_count = state.nonfinite_count + jnp.where(finite, 0, 1).astype(jnp.int32)
        first_nonfinite = jnp.where(
            (state.first_nonfinite_step < 0) & ~finite, state.step, state.first_nonfinite_step
        )
        posthoc_ema = state.posthoc_ema
        if posthoc_ema is not None:  # from the kept params: a skipped update averages the old
            posthoc_ema = update_power_ema(posthoc_ema, params, state.step + 1)
        metrics = {**metrics, "loss": loss, "grad_norm": grad_norm}
        metrics["nonfinite_count"] = nonfinite_count
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            opt_state=opt_state,
            model_state=model_state,
            ema_params=ema_params,
            nonfinite_count=nonfinite_count,
            first_nonfinite_step=first_nonfinite.astype(jnp.int32),
            posthoc_ema=posthoc_ema,
        )
        return new_state, metrics

    platform = batch_sharding.mesh.devices.flat[0].platform
    return jax.jit(
        train_step,
        in_shardings=(state_shardings, batch_sharding),
        out_shardings=(state_shardings, replicated),
        donate_argnums=(0,),
        compiler_options=train_step_compiler_options(platform),
    )


def make_eval_step(
    metric_fn: MetricFn, *, state_shardings: Any, batch_sharding: NamedSharding
) -> Callable[[TrainState, Any], dict]:
    """eval_step(state, batch) -> summed metrics of one batch (divide by "count" after the pass)."""
    replicated = NamedSharding(batch_sharding.mesh, jax.sharding.PartitionSpec())

    def eval_step(state: TrainState, batch):
        return metric_fn(state.params, state.model_state, batch)

    return jax.jit(
        eval_step, in_shardings=(state_shardings, batch_sharding), out_shardings=replicated
    )


def evaluate(eval_step, state: TrainState, batches, to_global) -> dict:
    """Runs eval_step over an iterator of local batches; returns sums divided by "count"."""
    totals: dict = {}
    for local_batch in batches:
        sums = eval_step(state, to_global(local_batch))
        for k, v in sums.items():
            totals[k] = totals.get(k, 0.0) + v
    totals = jax.device_get(totals)
    count = float(totals.pop("count", 1.0))
    return {k: float(v) / max(count, 1.0) for k, v in totals.items()} | {"count": count}


def masked_sum(values: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.sum(jnp.where(mask, values, 0.0))
