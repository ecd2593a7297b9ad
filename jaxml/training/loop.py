"""The train loop: linear, readable, resumable.

restore (if the workdir has a checkpoint) -> for each step: global batch,
train_step, log, checkpoint, eval -> final save. SIGTERM / SIGINT finish the
current step, save, and return; the relaunch resumes to the same numbers.

Multi-process jobs stop together: JAX's preemption sync manager catches SIGTERM
on any process, tells the others, and every process reaches the same step
(`multihost_utils.reached_preemption_sync_point`), where orbax saves. A process
that dies hard is noticed by the coordination service, which ends the others
after `heartbeat_timeout` seconds with an error naming the dead task.

Non-finite loss or gradients: the step skips the update (see make_train_step);
`config.nan_policy` "stop" ends the run with NonFiniteError naming the step
(checked at every log and before every save, nothing is saved after it),
"skip" counts, warns and goes on.
"""

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from jaxml.parallel import sharding
from jaxml.training.checkpoint import Checkpointer, abstract_like
from jaxml.training.compile_cache import log_compilation
from jaxml.training.metrics_log import MetricsLog
from jaxml.training.posthoc_ema import SnapshotWriter
from jaxml.training.state import TrainState

log = logging.getLogger(__name__)


NAN_POLICIES = ("stop", "skip")


class NonFiniteError(RuntimeError):
    """Loss or gradients became NaN/Inf under nan_policy="stop"."""


def _has_preemption_sync_manager() -> bool:
    """Whether jax.distributed runs JAX's preemption sync manager (it starts one in
    initialize() unless jax_enable_preemption_service is off)."""
    return (
        jax.process_count() > 1
        and jax.distributed.is_initialized()
        and bool(jax.config.jax_enable_preemption_service)
    )


class StopRequest:
    """Turns SIGTERM/SIGINT into a stop all processes agree on (a second SIGINT kills).

    One process: our handler sets a flag. Several: SIGTERM belongs to JAX's
    preemption sync manager (a Python handler would replace its C++ one), and
    SIGINT is forwarded to it as SIGTERM, so both take the same path. Without a
    sync manager, the flag is all-gathered every `check_every` steps.
    """

    def __init__(self, check_every: int = 1):
        self.signal_name: str | None = None
        self.check_every = check_every
        self._previous = {}
        self._jax_sync = _has_preemption_sync_manager()

    def __enter__(self):
        signals = (signal.SIGINT,) if self._jax_sync else (signal.SIGTERM, signal.SIGINT)
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        log.warning("%s received: finishing this step, then saving a checkpoint", self.signal_name)
        if self._jax_sync:
            os.kill(os.getpid(), signal.SIGTERM)  # JAX's handler notifies every process

    def agreed(self, step: int) -> bool:
        """True on every process, at the same `step`, once any process was asked to stop.

        Call it after every step (the sync manager needs to see each one)."""
        if self._jax_sync:
            if multihost_utils.reached_preemption_sync_point(step):
                self.signal_name = self.signal_name or "SIGTERM (preemption notice)"
                return True
            return False
        local = self.signal_name is not None
        if jax.process_count() == 1:
            return local
        if step % self.check_every:
            return False
        return bool(np.any(multihost_utils.process_allgather(np.array(local))))


def check_finite(state: TrainState, policy: str, reported: int) -> int:
    """Applies nan_policy to the state's non-finite counters; returns the count now reported."""
    count = int(jax.device_get(state.nonfinite_count))
    if count == reported:
        return count
    first = int(jax.device_get(state.first_nonfinite_step)) + 1  # steps count from 1
    if policy == "stop":
        raise NonFiniteError(
            f"loss or gradients became NaN/Inf at step {first} (nan_policy='stop'); the "
            "update was not applied and nothing after it was saved. Lower the learning rate, "
            "check the data, or set --config.nan_policy=skip to skip such steps"
        )
    log.warning(
        "skipped %d update(s) with NaN/Inf loss or gradients so far (first at step %d)",
        count,
        first,
    )
    return count


def _format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def run(
    *,
    workdir: str | os.PathLike,
    config: Any,
    state: TrainState,
    state_shardings: Any,
    train_step: Callable[[TrainState, Any], tuple[TrainState, dict]],
    train_iterator,
    batch_sharding,
    eval_fn: Callable[[TrainState], dict] | None = None,
) -> tuple[TrainState, dict]:
    """Trains to `config.total_steps`; returns (final state, last eval metrics).

    Uses config.{total_steps, log_every, eval_every, checkpoint_every,
    checkpoints_to_keep, checkpoint_keep_period, stop_check_every, nan_policy}.
    """
    workdir = epath.Path(workdir)
    nan_policy = config.get("nan_policy", "stop")
    total_steps = int(config.total_steps)
    ema_snapshots = SnapshotWriter.from_config(workdir, config, state)  # None unless configured
    checkpointer = Checkpointer(
        workdir / "checkpoints",
        save_every=config.checkpoint_every,
        max_to_keep=config.checkpoints_to_keep,
        keep_period=config.get("checkpoint_keep_period"),
    )
    config_dict = json.loads(json.dumps(config.to_dict()))  # as saved: tuples become lists

    latest = None
    if checkpointer.latest_step() is not None:
        latest, state, train_iterator = checkpointer.restore_latest(
            abstract_like(state, state_shardings), train_iterator
        )
        saved = checkpointer.saved_config(latest)
        if saved is not None and saved != config_dict:
            changed = sorted(
                k for k in set(saved) | set(config_dict) if saved.get(k) != config_dict.get(k)
            )
            log.warning("resuming with a config that differs from the checkpoint's in: %s", changed)
        log.info("resumed from %s at step %d", checkpointer.directory, latest)
    start = int(jax.device_get(state.step))
    reported_nonfinite = int(jax.device_get(state.nonfinite_count))

    metrics_log = MetricsLog(workdir)
    is_main = jax.process_index() == 0
    interactive = sys.stderr.isatty()
    eval_metrics: dict = {}
    last_saved = latest
    # A live bar on a terminal; in log files (CI, pods) a line per log_every with rate and ETA.
    bar = tqdm(
        total=total_steps,
        initial=start,
        disable=not (is_main and interactive),
        desc="train",
        dynamic_ncols=True,
    )
    tick, tick_step = time.perf_counter(), start

    def save(step: int, force: bool = False) -> bool:
        """Saves if due (or forced), never a state that nan_policy="stop" rejects."""
        nonlocal reported_nonfinite
        if force or checkpointer.should_save(step):
            reported_nonfinite = check_finite(state, nan_policy, reported_nonfinite)
        return checkpointer.save(step, state, train_iterator, config_dict, force=force)

    # On any exit (also an error) the checkpoint already started finishes writing.
    try:
        with StopRequest(int(config.get("stop_check_every", 1) or 1)) as stop:
            for step in range(start, total_steps):
                batch = sharding.global_batch(next(train_iterator), batch_sharding)
                if step == start:  # the first call compiles: say so, with a heartbeat
                    with log_compilation("train step"):
                        state, metrics = train_step(state, batch)
                        jax.block_until_ready(metrics)
                else:
                    state, metrics = train_step(state, batch)
                done = step + 1
                bar.update(1)

                if done % config.log_every == 0 or done == total_steps:
                    metrics = jax.device_get(metrics)
                    now = time.perf_counter()
                    metrics["steps_per_sec"] = (done - tick_step) / max(now - tick, 1e-9)
                    tick, tick_step = now, done
                    metrics_log.write(done, metrics, prefix="train/")
                    reported_nonfinite = check_finite(state, nan_policy, reported_nonfinite)
                    bar.set_postfix(loss=f"{float(metrics['loss']):.4f}", refresh=False)
                    if is_main and not interactive:
                        eta = (total_steps - done) / max(metrics["steps_per_sec"], 1e-9)
                        log.info(
                            "step %d/%d  loss %.4f  %.2f steps/s  ETA %s",
                            done,
                            total_steps,
                            metrics["loss"],
                            metrics["steps_per_sec"],
                            _format_seconds(eta),
                        )

                if ema_snapshots is not None:
                    ema_snapshots.maybe_save(done, state, last=done == total_steps)
                if save(done, force=done == total_steps):
                    last_saved = done

                # After the save: an eval that fails or is killed does not cost the step.
                if (
                    eval_fn is not None
                    and config.eval_every
                    and (done % config.eval_every == 0 or done == total_steps)
                ):
                    eval_metrics = eval_fn(state)
                    metrics_log.write(done, eval_metrics, prefix="eval/")
                    if is_main:
                        line = ", ".join(f"{k}={v:.4g}" for k, v in eval_metrics.items())
                        (bar.write if interactive else log.info)(f"eval at step {done}: {line}")

                if stop.agreed(done):
                    if last_saved != done:
                        save(done, force=True)
                        last_saved = done
                    log.warning(
                        "stopped by %s at step %d; checkpoint saved",
                        stop.signal_name or "a peer",
                        done,
                    )
                    break
        bar.close()
        final_step = int(jax.device_get(state.step))
        if last_saved != final_step:
            save(final_step, force=True)
    finally:
        checkpointer.close()
        metrics_log.close()
    return state, eval_metrics


def finish(workdir, config, state: TrainState, eval_metrics: dict, eval_fn) -> dict | None:
    """After `run`: None if stopped early (say so), else the final eval metrics, also written to
    <workdir>/final_metrics.json (evaluated now if the run resumed at its last step)."""
    step = int(jax.device_get(state.step))
    if step < config.total_steps:
        log.warning(
            "stopped at step %d of %d; run the same command to resume", step, config.total_steps
        )
        return None
    if not eval_metrics:
        eval_metrics = eval_fn(state)
    if jax.process_index() == 0:
        final = {"step": step, **eval_metrics}
        (epath.Path(workdir) / "final_metrics.json").write_text(json.dumps(final, indent=2))
    return eval_metrics
