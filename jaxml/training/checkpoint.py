"""orbax checkpoints of (train state, grain iterator position, config): async, atomic, resumable.

A step is only visible once orbax has finalized it (written to a temporary
folder, then renamed), so a process killed mid-save leaves the previous step as
the latest. Restore failures raise CheckpointError and never delete anything.
"""

import logging
import os
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from jaxml.training.state import TrainState


class CheckpointError(RuntimeError):
    """A checkpoint directory that cannot be used; nothing in it was changed."""


def _check_directory(directory: Path):
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
        self.directory = Path(directory).absolute()
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
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state),
                    data=grain.checkpoint.CheckpointRestore(data_iterator),
                ),
            )
        except Exception as e:  # noqa: BLE001 - orbax raises many types; report one clear error
            raise CheckpointError(
                f"cannot restore step {step} from {self.directory}: {type(e).__name__}: {e}\n"
                "Nothing was changed. If this step is damaged, move its folder elsewhere to resume "
                "from the previous one; if the config changed shape, use a new workdir."
            ) from e
        return restored.state, restored.data

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
            logging.warning("could not read the config saved with step %d", step)
            return None

    def wait(self):
        self._manager.wait_until_finished()

    def close(self):
        self._manager.wait_until_finished()
        self._manager.close()


def abstract_like(state: TrainState, shardings: Any) -> Any:
    """ShapeDtypeStructs with shardings: the layout a restore should produce."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
    )
