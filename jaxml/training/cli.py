"""What every `python -m train.*` entrypoint shares: flags, multi-host start, one-line errors.

  python -m train.s5 --config=train/configs/s5_mnist1d.py --config.total_steps=100 --workdir=runs/x

`--config.<key>=<value>` overrides any config field; an unknown key is an error.
"""

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from absl import app, flags
from etils import epath
from ml_collections import config_flags

from jaxml.data.sources import DatasetUnavailableError
from jaxml.parallel.distributed import maybe_initialize_distributed
from jaxml.parallel.mesh import MeshShapeError
from jaxml.training.checkpoint import CheckpointError
from jaxml.training.loop import NAN_POLICIES, NonFiniteError
from jaxml.training.posthoc_ema import PosthocEMAError


class ConfigError(ValueError):
    """A config value that cannot work (checked before any compute starts)."""


def check_loop_config(config, batch_keys: dict[str, int]):
    """Loop settings must be positive; each batch-like size a positive multiple of the devices."""
    import jax

    for key in ("total_steps", "log_every", "checkpoint_every"):
        if config[key] <= 0:
            raise ConfigError(f"config.{key} must be positive, got {config[key]}")
    nan_policy = config.get("nan_policy", "stop")
    if nan_policy not in NAN_POLICIES:
        raise ConfigError(f"config.nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    for key, value in batch_keys.items():
        if value <= 0 or value % jax.device_count():
            raise ConfigError(
                f"config.{key}={value} must be a positive multiple of the device "
                f"count ({jax.device_count()})"
            )


# Problems with the user's input: reported in one line, exit status 2, no traceback.
USER_ERRORS = (
    CheckpointError,
    ConfigError,
    DatasetUnavailableError,
    MeshShapeError,
    PosthocEMAError,
)


def define_flags(default_config: str):
    """--config (an ml_collections config file), --workdir, and multi-host flags."""
    try:
        # ml_collections applies the --config.* overrides from sys.argv right here.
        config_flags.DEFINE_config_file(
            "config",
            default_config,
            "Config file; override fields with --config.key=value.",
            lock_config=True,
        )
    except (AttributeError, KeyError) as e:
        key = str(e).strip("\"'")
        sys.exit(f"error: a --config.* override names {key!r}, which the config does not have")
    except (TypeError, ValueError, OSError) as e:
        sys.exit(f"error: bad --config or --config.* override: {e}")
    flags.DEFINE_string(
        "workdir",
        None,
        "Checkpoints, metrics and outputs go here (default runs/<config name>). "
        "A workdir with checkpoints is resumed.",
    )
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 for multi-host runs.")
    flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-host run.")
    flags.DEFINE_integer("process_id", None, "This process's index in a multi-host run.")
    flags.DEFINE_integer(
        "heartbeat_timeout",
        None,
        "Seconds after which a multi-host job whose process stopped answering (killed, "
        "machine lost) ends every other process with an error (default: JAX's, 100; "
        "or $JAXML_HEARTBEAT_TIMEOUT).",
    )


def workdir_from_flags() -> epath.Path:
    """--workdir (a local folder or gs://bucket/...), default runs/<config file name>."""
    fl = flags.FLAGS
    if fl.workdir:
        return epath.Path(fl.workdir)
    return epath.Path("runs") / Path(fl["config"].config_filename).stem


def run_main(main: Callable[[Any, Path], None]):
    """absl app.run of main(config, workdir): logging, multi-host init, one-line user errors."""

    def _main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        # Our progress at INFO; libraries (orbax, TFDS, XLA) log every file operation at INFO:
        # keep only their warnings.
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("absl").setLevel(logging.WARNING)
        for name in ("jaxml", "train"):
            logging.getLogger(name).setLevel(logging.INFO)
        fl = flags.FLAGS
        try:
            config = fl.config
            config.keys()  # a config that failed to load raises only when first used
        except OSError as e:  # a config file that does not load
            sys.exit(f"error: {e}")
        try:
            maybe_initialize_distributed(
                fl.coordinator_address,
                fl.num_processes,
                fl.process_id,
                heartbeat_timeout=fl.heartbeat_timeout,
            )
            main(config, workdir_from_flags())
        except USER_ERRORS as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except NonFiniteError as e:  # the run failed, not the input: status 1
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)

    app.run(_main)
