"""orbax checkpoints of (train state, grain iterator position, config): async, atomic, resumable.

A step is only visible once orbax has finalized it (written to a temporary
folder, then renamed), so a process killed mid-save leaves the previous step as
the latest. Restore failures raise CheckpointError and never delete anything;
`restore_latest` falls back to an earlier step when the latest one is damaged
and moves the damaged folder aside (to `<directory>_damaged/`), never deleting it.

Elastic restore: the state is restored into whatever mesh the abstract target
carries (orbax reshards), and the data position is process-count independent
(the grain iterator counts global batches), so a checkpoint written by 8
devices in 1 process resumes on 1 device, or on 2 processes x 2 devices.
"""

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from jaxml.training.state import TrainState

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint directory that cannot be used; nothing in it was changed."""


def is_remote(path) -> bool:
    """gs://, s3:// and the like: orbax and epath handle them; local checks do not apply."""
    return "://" in str(path)


def _check_directory(directory: epath.Path):
    if is_remote(directory):
        return
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"checkpoint path {directory} exists but is not a directory")
    if directory.exists() and not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
        raise CheckpointError(f"checkpoint directory {directory} is not readable and writable")
    parent = next((p for p in [directory, *directory.parents] if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise CheckpointError(f"checkpoint path {directory}: {parent} is not a directory")


class Checkpointer:
    """Saves every `save_every` steps, keeps the last `max_to_keep` and every `keep_period`-th."""

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        save_every: int,
        max_to_keep: int = 3,
        keep_period: int | None = None,
        async_save: bool = True,
    ):
        directory = epath.Path(directory)
        self.directory = directory if directory.is_absolute() else directory.absolute()
        _check_directory(self.directory)
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=save_every,
            max_to_keep=max_to_keep,
            keep_period=keep_period,
            enable_async_checkpointing=async_save,
            create=True,
        )
        try:
            self._manager = ocp.CheckpointManager(
                self.directory, item_names=("state", "data", "config"), options=options
            )
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"cannot open checkpoint directory {self.directory}: {e}") from e

    def should_save(self, step: int) -> bool:
        return self._manager.should_save(step)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(
        self, step: int, state: TrainState, data_iterator, config: dict, *, force: bool = False
    ) -> bool:
        """Starts an (async) save when `step` is due or `force`; returns whether it saves."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(data_iterator),
            config=ocp.args.JsonSave(config),
        )
        return self._manager.save(step, args=args, force=force)

    def restore(self, step: int, abstract_state: Any, data_iterator) -> tuple[TrainState, Any]:
        """Restores state (in the layout `abstract_state` carries) and the iterator position."""
        try:
            state = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
            ).state
            data_state = self._saved_data_state(step)
        except Exception as e:  # noqa: BLE001 - orbax raises many types; report one clear error
            raise CheckpointError(
                f"cannot restore step {step} from {self.directory}: {type(e).__name__}: {e}\n"
                "Nothing was changed. If this step is damaged, move its folder elsewhere to resume "
                "from the previous one; if the config changed shape, use a new workdir."
            ) from e
        data_iterator.set_state(data_state)
        data_iterator.start_prefetch()
        return state, data_iterator

    def _saved_data_state(self, step: int) -> dict:
        """This process's grain iterator state; any process's file when the count changed.

        grain writes one `process_<i>-of-<n>.json` per process. Our iterators count
        global batches, so every process saves the same state and a job with another
        process count can take it (we check that the saved files agree).
        """
        data_dir = self.directory / str(step) / "data"
        own = data_dir / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        if own.exists():
            return json.loads(own.read_text())
        saved = sorted(data_dir.glob("process_*-of-*.json"))
        if not saved:
            raise FileNotFoundError(f"no data iterator state in {data_dir}")
        states = [json.loads(p.read_text()) for p in saved]
        if any(s != states[0] for s in states):
            raise ValueError(
                f"the {len(saved)} processes that saved step {step} were at different data "
                "positions, so the position cannot be carried over to "
                f"{jax.process_count()} processes"
            )
        log.info(
            "data position of step %d taken from %s (saved by a job with another process count)",
            step,
            saved[0].name,
        )
        return states[0]

    def restore_latest(self, abstract_state: Any, data_iterator) -> tuple[int, TrainState, Any]:
        """Restores the newest step that restores; a damaged newer step is moved aside, with a
        warning. If no step restores, raises the newest step's error and moves nothing (a
        changed model shape fails every step the same way: that is the user's to fix)."""
        steps = sorted(self.all_steps(), reverse=True)
        first_error = None
        for i, step in enumerate(steps):
            try:
                restored = self.restore(step, abstract_state, data_iterator)
                ok = True
            except CheckpointError as e:
                first_error = first_error or e
                ok = False
            if not _all_processes(ok):
                if ok:  # restored here, failed on another process
                    first_error = first_error or CheckpointError(
                        f"step {step} of {self.directory} failed to restore on another process"
                    )
                continue
            if i:
                log.warning(
                    "checkpoint steps %s of %s could not be restored (%s); resumed from step %d "
                    "and moved them to %s",
                    steps[:i],
                    self.directory,
                    str(first_error).splitlines()[0],
                    step,
                    self.damaged_directory,
                )
                self._move_aside(steps[:i])
            return (step, *restored)
        raise first_error

    @property
    def damaged_directory(self) -> epath.Path:
        return self.directory.parent / f"{self.directory.name}_damaged"

    def _move_aside(self, steps: list[int]):
        if jax.process_index() == 0:
            self.damaged_directory.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for step in steps:
                (self.directory / str(step)).rename(self.damaged_directory / f"{step}-{stamp}")
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("jaxml_checkpoint_move_aside")
        self._manager.reload()

    def restore_state(self, step: int, abstract_state: Any) -> TrainState:
        """Only the train state (e.g. to sample from it), in the layout `abstract_state` carries."""
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
            )
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"cannot restore step {step} from {self.directory}: {type(e).__name__}: {e}"
            ) from e
        return restored.state

    def saved_config(self, step: int) -> dict | None:
        try:
            return self._manager.restore(
                step, args=ocp.args.Composite(config=ocp.args.JsonRestore())
            ).config
        except Exception:  # noqa: BLE001 - the config is informational only
            log.warning("could not read the config saved with step %d", step)
            return None

    def close(self):
        self._manager.wait_until_finished()
        self._manager.close()


def _all_processes(ok: bool) -> bool:
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.array(ok))))


def abstract_like(state: TrainState, shardings: Any) -> Any:
    """ShapeDtypeStructs with shardings: the layout a restore should produce."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
    )
