"""What every `python -m train.*` entrypoint shares: flags, multi-host start, one-line errors.

  python -m train.s5 --config=train/configs/s5_mnist1d.py --config.total_steps=100 --workdir=runs/x

`--config.<key>=<value>` overrides any config field; an unknown key is an error.
"""
import logging
import sys
from pathlib import Path
from typing import Callable

from absl import app, flags
from ml_collections import config_flags

from jaxml.data.sources import DatasetUnavailableError
from jaxml.parallel.distributed import maybe_initialize_distributed
from jaxml.parallel.mesh import MeshShapeError
from jaxml.training.checkpoint import CheckpointError



class ConfigError(ValueError):
  """A config value that cannot work (checked before any compute starts)."""


# Problems with the user's input: reported in one line, exit status 2, no traceback.
USER_ERRORS = (CheckpointError, ConfigError, DatasetUnavailableError, MeshShapeError)


def define_flags(default_config: str):
  """--config (an ml_collections config file), --workdir, and multi-host flags."""
  config_flags.DEFINE_config_file(
      "config", default_config, "Config file; override fields with --config.key=value.",
      lock_config=True)
  flags.DEFINE_string("workdir", None,
                      "Checkpoints, metrics and outputs go here (default runs/<config name>). "
                      "A workdir with checkpoints is resumed.")
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 for multi-host runs.")
  flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-host run.")
  flags.DEFINE_integer("process_id", None, "This process's index in a multi-host run.")


def workdir_from_flags() -> Path:
  fl = flags.FLAGS
  if fl.workdir:
    return Path(fl.workdir)
  return Path("runs") / Path(fl["config"].config_filename).stem


def run_main(main: Callable[[], None]):
  """absl app.run(main) with logging at INFO, multi-host init, and clean user-error exits."""

  def _main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger().setLevel(logging.INFO)
    fl = flags.FLAGS
    try:
      maybe_initialize_distributed(fl.coordinator_address, fl.num_processes, fl.process_id)
      main()
    except USER_ERRORS as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  app.run(_main)
