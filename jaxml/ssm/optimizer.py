"""The S5 optimizer recipes (lindermanlab/S5 `opt_config`), with warmup + cosine schedules.

Every parameter falls into one of four groups, decided by its leaf name:

- "ssm": Adam at `ssm_lr`, no weight decay. Λ (Lambda_re, Lambda_im) always; B and
  log_step unless the recipe moves them; C and D too under "noBCdecay".
- "regular": AdamW at lr = lr_factor·ssm_lr with `weight_decay`: kernels, C, D, and
  whatever the recipe moves here (B under "BfastandCdecay", log_step with dt_global).
- "regular_ssm_lr": AdamW at `ssm_lr` with `weight_decay`: B under "BandCdecay".
- "no_decay": Adam at lr: every `bias` and every norm `scale`. The official code meant
  to exclude norms (its key "norm" never matched a leaf, so they were decayed); we don't
  copy that slip, and biases are not decayed either.

Recipes (`opt_config`, the official names; `dt_global` is the official separate flag that
moves log_step from "ssm" to "regular" under any recipe):

  standard        B, Λ, log_step -> ssm
  BandCdecay      Λ, log_step -> ssm;      B -> regular_ssm_lr
  BfastandCdecay  Λ, log_step -> ssm;      B -> regular
  noBCdecay       B, C, D, Λ, log_step -> ssm

Schedules: "cosine" (linear warmup over W steps, then a cosine over the remaining T − W
steps to lr_min at T), "official_cosine" (as lindermanlab/S5 computes it: after warmup the
cosine runs on the global step with end T − W, so it starts at cos(πW/(T−W)) of the peak
and sits at lr_min for the last W steps) and "constant" (warmup, then the peak).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

OPT_CONFIGS = ("standard", "BandCdecay", "BfastandCdecay", "noBCdecay")
SCHEDULES = ("cosine", "official_cosine", "constant")
# Optimizer groups; s5_optimizer builds one optax transformation per entry.
GROUPS = ("ssm", "regular", "regular_ssm_lr", "no_decay")

_LAMBDA = ("Lambda_re", "Lambda_im")
NO_DECAY_PARAM_NAMES = frozenset({"bias", "scale"})


def _ssm_group_names(opt_config: str, dt_global: bool) -> dict[str, str]:
    """Leaf name -> group for the SSM parameters under a recipe (others: regular/no_decay)."""
    groups = {name: "ssm" for name in _LAMBDA}
    groups["log_step"] = "regular" if dt_global else "ssm"
    groups["B"] = {
        "standard": "ssm",
        "BandCdecay": "regular_ssm_lr",
        "BfastandCdecay": "regular",
        "noBCdecay": "ssm",
    }[opt_config]
    if opt_config == "noBCdecay":
        groups["C"] = groups["D"] = "ssm"
    return groups


def _leaf_name(path) -> str:
    key = path[-1]
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def param_group(name: str, opt_config: str = "standard", dt_global: bool = False) -> str:
    """The optimizer group of a parameter from its leaf name, under a recipe."""
    if opt_config not in OPT_CONFIGS:
        raise ValueError(f"unknown opt_config {opt_config!r}; expected one of {OPT_CONFIGS}")
    group = _ssm_group_names(opt_config, dt_global).get(name)
    if group is not None:
        return group
    return "no_decay" if name in NO_DECAY_PARAM_NAMES else "regular"


def s5_param_labels(params: Any, opt_config: str = "standard", dt_global: bool = False) -> Any:
    """Pytree of group labels (one of GROUPS) with the structure of `params`."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: param_group(_leaf_name(path), opt_config, dt_global), params
    )


def official_cosine(
    peak: float, warmup_steps: int, total_steps: int, lr_min: float = 0.0
) -> optax.Schedule:
    """lindermanlab/S5's schedule: linear warmup peak·(k+1)/W, then
    lr_min + (peak − lr_min)·(1 + cos(π·min(k, E)/E))/2 with E = T − W on the global step k."""
    end = total_steps - warmup_steps

    def schedule(count):
        count = jnp.asarray(count, jnp.float32)
        warm = peak * (count + 1.0) / max(warmup_steps, 1)
        cosine = lr_min + (peak - lr_min) * 0.5 * (
            1.0 + jnp.cos(jnp.pi * jnp.minimum(count, end) / end)
        )
        return jnp.where(count < warmup_steps, warm, cosine)

    return schedule


def _schedule(
    kind: str, peak: float, warmup_steps: int, total_steps: int | None, lr_min: float
) -> optax.Schedule:
    # Warmup starts at peak/warmup_steps rather than 0, so the first step is not wasted
    # (the official code uses peak·(step+1)/warmup_steps).
    start = peak / max(warmup_steps, 1)
    if kind == "official_cosine":
        return official_cosine(peak, warmup_steps, total_steps, lr_min)
    if total_steps is None or kind == "constant":
        if warmup_steps == 0:
            return optax.constant_schedule(peak)
        return optax.join_schedules(
            [optax.linear_schedule(start, peak, warmup_steps), optax.constant_schedule(peak)],
            [warmup_steps],
        )
    return optax.warmup_cosine_decay_schedule(
        init_value=start if warmup_steps else peak,
        peak_value=peak,
        warmup_steps=warmup_steps,
        decay_steps=total_steps,
        end_value=lr_min,
    )


def s5_schedules(
    ssm_lr: float = 1e-3,
    lr_factor: float = 1.0,
    warmup_steps: int = 0,
    total_steps: int | None = None,
    lr_min: float = 0.0,
    schedule: str = "cosine",
) -> tuple[optax.Schedule, optax.Schedule]:
    """(ssm schedule, regular schedule) of the kind `schedule` (see SCHEDULES)."""
    if ssm_lr <= 0 or lr_factor <= 0:
        raise ValueError(f"ssm_lr and lr_factor must be positive, got {ssm_lr} and {lr_factor}.")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")
    if schedule == "official_cosine" and total_steps is None:
        raise ValueError("schedule 'official_cosine' needs total_steps.")
    if total_steps is not None and total_steps <= warmup_steps * (
        2 if schedule == "official_cosine" else 1
    ):
        raise ValueError(
            f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})"
            + (
                " twice for 'official_cosine' (its cosine ends at T − W)"
                if schedule == "official_cosine"
                else ""
            )
        )
    return (
        _schedule(schedule, ssm_lr, warmup_steps, total_steps, lr_min),
        _schedule(schedule, lr_factor * ssm_lr, warmup_steps, total_steps, lr_min),
    )


def s5_optimizer(
    ssm_lr: float = 1e-3,
    lr_factor: float = 1.0,
    weight_decay: float = 0.05,
    warmup_steps: int = 0,
    total_steps: int | None = None,
    *,
    opt_config: str = "standard",
    dt_global: bool = False,
    schedule: str = "cosine",
    lr_min: float = 0.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    clip_grad_norm: float | None = None,
    param_labels: Callable[[Any], Any] | None = None,
) -> optax.GradientTransformation:
    """An S5 training recipe as one optax transformation (defaults: official S5 CLI).

    Args:
      ssm_lr: peak learning rate of the "ssm" (and "regular_ssm_lr") group.
      lr_factor: the "regular" and "no_decay" groups use lr = lr_factor · ssm_lr.
      weight_decay: decoupled (AdamW) weight decay of the "regular*" groups.
      warmup_steps: linear warmup length.
      total_steps: end of the cosine decay (to lr_min); None keeps the peak.
      opt_config, dt_global: the official recipe (see the module docstring).
      schedule: "cosine", "official_cosine" or "constant".
      clip_grad_norm: optional global-norm clipping before the update.
      param_labels: params -> labels; default `s5_param_labels` under the recipe.
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
    if opt_config not in OPT_CONFIGS:
        raise ValueError(f"unknown opt_config {opt_config!r}; expected one of {OPT_CONFIGS}")
    ssm_schedule, regular_schedule = s5_schedules(
        ssm_lr, lr_factor, warmup_steps, total_steps, lr_min, schedule
    )
    adam = dict(b1=b1, b2=b2, eps=eps)
    transforms = {
        "ssm": optax.adam(ssm_schedule, **adam),
        "regular": optax.adamw(regular_schedule, weight_decay=weight_decay, **adam),
        "regular_ssm_lr": optax.adamw(ssm_schedule, weight_decay=weight_decay, **adam),
        "no_decay": optax.adam(regular_schedule, **adam),
    }
    assert tuple(transforms) == GROUPS
    if param_labels is None:

        def param_labels(params):
            return s5_param_labels(params, opt_config, dt_global)

    tx = optax.multi_transform(transforms, param_labels)
    if clip_grad_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(clip_grad_norm), tx)
    return tx
