"""Keeps the state with the best value of one eval metric, as the S5 paper's protocol needs:
the reported number is the test accuracy at the best-validation evaluation.

`<workdir>/best/<step>/` is an orbax checkpoint of {"params", "model_state"} together with a
JSON record of that evaluation's metrics, written atomically (orbax renames a finished
temporary folder), one kept. A resumed run reads the record back and goes on comparing.
"""

from __future__ import annotations

import logging

import jax
import orbax.checkpoint as ocp
from etils import epath

log = logging.getLogger(__name__)


class BestCheckpoint:
    """Tracks max(metric) over evaluations; saves the state each time it improves."""

    def __init__(self, workdir, *, metric: str, label: str):
        self.metric, self.label = metric, label
        self.record: dict | None = None
        self._manager = None
        if workdir is not None:
            directory = epath.Path(workdir) / "best"
            directory = directory if directory.is_absolute() else directory.absolute()
            self._manager = ocp.CheckpointManager(
                directory,
                item_names=("state", "metrics"),
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=1, create=True, enable_async_checkpointing=False
                ),
            )
            step = self._manager.latest_step()
            if step is not None:
                restored = self._manager.restore(
                    step, args=ocp.args.Composite(metrics=ocp.args.JsonRestore())
                )
                self.record = dict(restored["metrics"])

    def update(self, step: int, results: dict, state) -> dict:
        """Compares results[metric] with the best so far; saves the state if it improved."""
        if self.metric not in results:
            raise KeyError(
                f"best_checkpoint needs {self.metric!r} from an earlier evaluator "
                f"(list 'accuracy' before it in config.evals); got {sorted(results)}"
            )
        value = float(results[self.metric])
        if self.record is None or value > self.record[self.metric]:
            self.record = {"step": step, **{k: float(v) for k, v in results.items()}}
            if self._manager is not None:
                tree = {"params": state.params, "model_state": state.model_state}
                self._manager.save(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardSave(tree), metrics=ocp.args.JsonSave(self.record)
                    ),
                    force=True,
                )
                self._manager.wait_until_finished()
            log.info("new %s at step %d: %s %.4f", self.label, step, self.metric, value)
        return {f"best/{k}": v for k, v in self.record.items()}

    def evaluate(self, context):
        """An evaluator: reads the metrics the earlier evaluators put in context["results"]."""

        def evaluate(state):
            step = int(jax.device_get(state.step))
            return self.update(step, context["results"], state)

        return evaluate


def restore_best(workdir) -> tuple[dict, dict]:
    """(metrics record, flax variables {"params", **model_state}) of <workdir>/best/, as NumPy
    arrays on the host, e.g. to run the best model in step (streaming) mode."""
    directory = epath.Path(workdir) / "best"
    directory = directory if directory.is_absolute() else directory.absolute()
    manager = ocp.CheckpointManager(directory, item_names=("state", "metrics"))
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"no best-validation checkpoint in {directory}")
    restored = manager.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(), metrics=ocp.args.JsonRestore()),
    )
    state = restored["state"]
    return dict(restored["metrics"]), {"params": state["params"], **state["model_state"]}
