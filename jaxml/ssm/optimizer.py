"""The S5 optimizer recipe: two learning rates, selective weight decay, warmup + cosine.

Parameters fall into three groups, by the name of the leaf:

- "ssm": B, Lambda_re, Lambda_im, log_step. Adam at `ssm_lr`, no weight decay:
  decay would pull the eigenvalues Λ towards 0 (towards instability) and the
  step sizes towards 1, which is not a prior anyone wants.
- "no_decay": `bias` and `scale` leaves, i.e. every Dense/GLU bias and every
  LayerNorm/BatchNorm parameter. Adam at lr = lr_factor·ssm_lr. (The official
  code meant to exclude norms but its key "norm" never matched a leaf.)
- "decay": everything else (encoder/decoder/GLU kernels, C and D). AdamW at lr
  with `weight_decay`. D stays here, as in the official "standard" recipe that
  produced the paper's numbers: it is a per-channel feed-through gain, a weight
  like C, not a normalization or bias parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

SSM_PARAM_NAMES = frozenset({"B", "Lambda_re", "Lambda_im", "log_step"})
NO_DECAY_PARAM_NAMES = frozenset({"bias", "scale"})
GROUPS = ("ssm", "decay", "no_decay")


def _leaf_name(path) -> str:
    key = path[-1]
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def param_group(name: str) -> str:
    """The optimizer group of a parameter from its leaf name."""
    if name in SSM_PARAM_NAMES:
        return "ssm"
    if name in NO_DECAY_PARAM_NAMES:
        return "no_decay"
    return "decay"


def s5_param_labels(params: Any) -> Any:
    """Pytree of group labels ("ssm", "decay", "no_decay") with the structure of `params`."""
    return jax.tree_util.tree_map_with_path(lambda path, _: param_group(_leaf_name(path)), params)


def _schedule(
    peak: float, warmup_steps: int, total_steps: int | None, lr_min: float
) -> optax.Schedule:
    # Warmup starts at peak/warmup_steps rather than 0, so the first step is not wasted
    # (the official code uses peak·(step+1)/warmup_steps).
    start = peak / max(warmup_steps, 1)
    if total_steps is None:
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
) -> tuple[optax.Schedule, optax.Schedule]:
    """(ssm schedule, regular schedule): linear warmup, then cosine decay to lr_min
    at `total_steps` (constant after warmup when total_steps is None)."""
    if ssm_lr <= 0 or lr_factor <= 0:
        raise ValueError(f"ssm_lr and lr_factor must be positive, got {ssm_lr} and {lr_factor}.")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
    if total_steps is not None and total_steps <= warmup_steps:
        raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps}).")
    return (
        _schedule(ssm_lr, warmup_steps, total_steps, lr_min),
        _schedule(lr_factor * ssm_lr, warmup_steps, total_steps, lr_min),
    )


def s5_optimizer(
    ssm_lr: float = 1e-3,
    lr_factor: float = 1.0,
    weight_decay: float = 0.05,
    warmup_steps: int = 0,
    total_steps: int | None = None,
    *,
    lr_min: float = 0.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    clip_grad_norm: float | None = None,
    param_labels: Callable[[Any], Any] = s5_param_labels,
) -> optax.GradientTransformation:
    """The S5 training recipe as one optax transformation (defaults: official S5 CLI).

    Args:
      ssm_lr: peak learning rate of the SSM parameters (B, Λ, log Δ).
      lr_factor: the other parameters use lr = lr_factor · ssm_lr.
      weight_decay: decoupled (AdamW) weight decay of the "decay" group.
      warmup_steps: linear warmup length.
      total_steps: end of the cosine decay (to lr_min); None keeps the peak.
      clip_grad_norm: optional global-norm clipping before the update.
      param_labels: params -> labels; see `s5_param_labels`.
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
    ssm_schedule, schedule = s5_schedules(ssm_lr, lr_factor, warmup_steps, total_steps, lr_min)
    adam = dict(b1=b1, b2=b2, eps=eps)
    tx = optax.multi_transform(
        {
            "ssm": optax.adam(ssm_schedule, **adam),
            "decay": optax.adamw(schedule, weight_decay=weight_decay, **adam),
            "no_decay": optax.adam(schedule, **adam),
        },
        param_labels,
    )
    if clip_grad_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(clip_grad_norm), tx)
    return tx
