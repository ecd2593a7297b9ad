"""The train loop: linear, readable, resumable.

restore (if the workdir has a checkpoint) -> for each step: global batch,
train_step, log, eval, checkpoint -> final save. SIGTERM / SIGINT finish the
current step, save, and return; the relaunch resumes to the same numbers.
"""
import logging
import signal
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from jaxml.parallel import sharding
from jaxml.training.checkpoint import Checkpointer, abstract_like
from jaxml.training.metrics_log import MetricsLog
from jaxml.training.state import TrainState


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
    logging.warning("%s received: finishing this step, then saving a checkpoint", self.signal_name)

  def agreed(self) -> bool:
    """True on every process if any process was asked to stop (collective when multi-host)."""
    local = self.signal_name is not None
    if jax.process_count() == 1:
      return local
    return bool(np.any(multihost_utils.process_allgather(np.array(local))))


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
      workdir / "checkpoints", save_every=config.checkpoint_every,
      max_to_keep=config.checkpoints_to_keep, keep_period=config.get("checkpoint_keep_period"))
  config_dict = config.to_dict()

  latest = checkpointer.latest_step()
  if latest is not None:
    saved = checkpointer.saved_config(latest)
    if saved is not None and saved != config_dict:
      changed = sorted(k for k in set(saved) | set(config_dict) if saved.get(k) != config_dict.get(k))
      logging.warning("resuming with a config that differs from the checkpoint's in: %s", changed)
    state, train_iterator = checkpointer.restore(
        latest, abstract_like(state, state_shardings), train_iterator)
    logging.info("resumed from %s at step %d", checkpointer.directory, latest)
  start = int(jax.device_get(state.step))

  log = MetricsLog(workdir)
  is_main = jax.process_index() == 0
  eval_metrics: dict = {}
  last_saved = latest
  stop_check_every = int(config.get("stop_check_every", 1) or 1)
  bar = tqdm(total=total_steps, initial=start, disable=not is_main, desc="train",
             dynamic_ncols=True, mininterval=2.0)
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
        log.write(done, metrics, prefix="train/")
        bar.set_postfix(loss=f"{float(metrics['loss']):.4f}", refresh=False)
        if not bar.disable and not bar.fp.isatty():  # CI logs: a line with rate and ETA
          logging.info("%s", bar)

      if eval_fn is not None and config.eval_every and (
          done % config.eval_every == 0 or done == total_steps):
        eval_metrics = eval_fn(state)
        log.write(done, eval_metrics, prefix="eval/")
        if is_main:
          bar.write(f"step {done}: " + ", ".join(f"{k}={v:.4g}" for k, v in eval_metrics.items()))

      if checkpointer.save(done, state, train_iterator, config_dict):
        last_saved = done
      if (done % stop_check_every == 0 or done == total_steps) and stop.agreed():
        if last_saved != done:
          checkpointer.save(done, state, train_iterator, config_dict, force=True)
          last_saved = done
        logging.warning("stopped by %s at step %d; checkpoint saved", stop.signal_name or "a peer", done)
        break
  bar.close()
  if last_saved != int(jax.device_get(state.step)):
    checkpointer.save(int(jax.device_get(state.step)), state, train_iterator, config_dict, force=True)
  checkpointer.close()
  log.close()
  return state, eval_metrics
