"""Tasks: one module per task (`classification`, `diffusion`, `video`), each with
`build(config, mesh) -> Task`. The `train/*.py` entrypoints only parse flags, call
`build`, then `train(task, config, workdir)`.
"""

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import jax

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
    if final is not None and jax.process_index() == 0:
        print(
            f"step {config.total_steps}: "
            + ", ".join(f"{k} {v:.4g}" for k, v in final.items() if isinstance(v, int | float))
        )
    return final
