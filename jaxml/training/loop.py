"""The train loop: linear, readable, resumable.

restore (if the workdir has a checkpoint) -> for each step: global batch,
train_step, log, eval, checkpoint -> final save. SIGTERM / SIGINT finish the
current step, save, and return; the relaunch resumes to the same numbers.
"""

import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from jaxml.parallel import sharding
from jaxml.training.checkpoint import Checkpointer, abstract_like
from jaxml.training.metrics_log import MetricsLog
from jaxml.training.state import TrainState

log = logging.getLogger(__name__)


class StopRequest:
    """Turns SIGTERM/SIGINT into a flag the loop checks between steps (a second SIGINT kills)."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
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

    def agreed(self) -> bool:
        """True on every process if any process was asked to stop (collective when multi-host)."""
        local = self.signal_name is not None
        if jax.process_count() == 1:
            return local
        return bool(np.any(multihost_utils.process_allgather(np.array(local))))


def _format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def run(
    *,
    workdir: str | Path,
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
    checkpoints_to_keep, checkpoint_keep_period, stop_check_every}.
    """
    workdir = Path(workdir)
    total_steps = int(config.total_steps)
    checkpointer = Checkpointer(
        workdir / "checkpoints",
        save_every=config.checkpoint_every,
        max_to_keep=config.checkpoints_to_keep,
        keep_period=config.get("checkpoint_keep_period"),
    )
    config_dict = json.loads(json.dumps(config.to_dict()))  # as saved: tuples become lists

    latest = checkpointer.latest_step()
    if latest is not None:
        saved = checkpointer.saved_config(latest)
        if saved is not None and saved != config_dict:
            changed = sorted(
                k for k in set(saved) | set(config_dict) if saved.get(k) != config_dict.get(k)
            )
            log.warning("resuming with a config that differs from the checkpoint's in: %s", changed)
        state, train_iterator = checkpointer.restore(
            latest, abstract_like(state, state_shardings), train_iterator
        )
        log.info("resumed from %s at step %d", checkpointer.directory, latest)
    start = int(jax.device_get(state.step))

    metrics_log = MetricsLog(workdir)
    is_main = jax.process_index() == 0
    interactive = sys.stderr.isatty()
    eval_metrics: dict = {}
    last_saved = latest
    stop_check_every = int(config.get("stop_check_every", 1) or 1)
    # A live bar on a terminal; in log files (CI, pods) a line per log_every with rate and ETA.
    bar = tqdm(
        total=total_steps,
        initial=start,
        disable=not (is_main and interactive),
        desc="train",
        dynamic_ncols=True,
    )
    tick, tick_step = time.perf_counter(), start
    with StopRequest() as stop:
        for step in range(start, total_steps):
            batch = sharding.global_batch(next(train_iterator), batch_sharding)
            state, metrics = train_step(state, batch)
            done = step + 1
            bar.update(1)

            if done % config.log_every == 0 or done == total_steps:
                metrics = jax.device_get(metrics)
                now = time.perf_counter()
                metrics["steps_per_sec"] = (done - tick_step) / max(now - tick, 1e-9)
                tick, tick_step = now, done
                metrics_log.write(done, metrics, prefix="train/")
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

            if checkpointer.save(done, state, train_iterator, config_dict):
                last_saved = done
            if (done % stop_check_every == 0 or done == total_steps) and stop.agreed():
                if last_saved != done:
                    checkpointer.save(done, state, train_iterator, config_dict, force=True)
                    last_saved = done
                log.warning(
                    "stopped by %s at step %d; checkpoint saved", stop.signal_name or "a peer", done
                )
                break
    bar.close()
    if last_saved != int(jax.device_get(state.step)):
        checkpointer.save(
            int(jax.device_get(state.step)), state, train_iterator, config_dict, force=True
        )
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
        (Path(workdir) / "final_metrics.json").write_text(json.dumps(final, indent=2))
    return eval_metrics
