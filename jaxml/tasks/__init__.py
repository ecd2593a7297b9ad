"""Tasks: one module per task (`classification`, `diffusion`, `video`), each with
`build(config, mesh) -> Task`. The `train/*.py` entrypoints only parse flags, call
`build`, then `train(task, config, workdir)`.
"""

import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any

import jax
from etils import epath

from jaxml.training import loop
from jaxml.training.state import TrainState

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Task:
    """Everything the train loop needs, built from a config and a mesh."""

    state: TrainState
    state_shardings: Any
    train_step: Callable[[TrainState, Any], tuple[TrainState, dict]]
    train_iterator: Any
    batch_sharding: Any
    eval_fn: Callable[[TrainState], dict] | None
    summary: str = ""  # one line logged before training (model size, steps/epoch, ...)
    # Optional: final eval metrics (with "step") -> what final_metrics.json holds instead.
    report: Callable[[dict], dict] | None = None


def train(task: Task, config, workdir) -> dict | None:
    """Runs the loop to config.total_steps; returns the final eval metrics (None if stopped
    early), also written to <workdir>/final_metrics.json."""
    if task.summary:
        log.info("%s", task.summary)
    # The ambient mesh lets Pallas kernels run per device (jaxml.parallel.kernel_partition).
    with jax.set_mesh(task.batch_sharding.mesh):
        state, eval_metrics = loop.run(
            workdir=workdir,
            config=config,
            state=task.state,
            state_shardings=task.state_shardings,
            train_step=task.train_step,
            train_iterator=task.train_iterator,
            batch_sharding=task.batch_sharding,
            eval_fn=task.eval_fn,
        )
        final = loop.finish(workdir, config, state, eval_metrics, task.eval_fn)
    if final is not None and task.report is not None:
        final = task.report({"step": config.total_steps, **final})
        if jax.process_index() == 0:
            (epath.Path(workdir) / "final_metrics.json").write_text(json.dumps(final, indent=2))
    if final is not None and jax.process_index() == 0:
        print(f"step {config.total_steps}: {_summary_line(final)}")
    return final


def _summary_line(metrics: dict) -> str:
    parts = []
    for k, v in metrics.items():
        if isinstance(v, dict):
            parts.append(f"{k}: {_summary_line(v)}")
        elif isinstance(v, int | float):
            parts.append(f"{k} {v:.4g}")
    return ", ".join(parts)
