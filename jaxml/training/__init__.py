"""The training spine: state, jitted steps, loop, checkpoints, metrics."""

from jaxml.training.checkpoint import Checkpointer, CheckpointError
from jaxml.training.state import TrainState, create_train_state
from jaxml.training.step import evaluate, make_eval_step, make_train_step, masked_sum

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "TrainState",
    "create_train_state",
    "evaluate",
    "make_eval_step",
    "make_train_step",
    "masked_sum",
]
