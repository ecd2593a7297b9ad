"""What every `python -m train.*` entrypoint shares: flags, multi-host start, one-line errors.

  python -m train.s5 --config=train/configs/s5_mnist1d.py --config.total_steps=100 --workdir=runs/x

`--config.<key>=<value>` overrides any config field; an unknown key is an error.
"""

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from absl import app, flags
from etils import epath
from ml_collections import config_flags

from jaxml.data.sources import DatasetUnavailableError
from jaxml.parallel.distributed import maybe_initialize_distributed
from jaxml.parallel.mesh import MeshShapeError
from jaxml.training.checkpoint import CheckpointError
from jaxml.training.compile_cache import enable_compilation_cache
from jaxml.training.loop import NAN_POLICIES, NonFiniteError
from jaxml.training.posthoc_ema import PosthocEMAError


class ConfigError(ValueError):
    """A config value that cannot work (checked before any compute starts)."""


# Up-front checks for the task modules: each raises ConfigError naming the key
# ("config.sampler.name must be one of ..."), which run_main turns into one line and exit 2.


def config_value(config, key: str):
    """config's value at a dotted key ("sampler.name"); ConfigError if there is none."""
    value = config
    for part in key.split("."):
        try:
            value = value[part]
        except (KeyError, AttributeError, TypeError):
            raise ConfigError(f"config.{key} is missing from the config") from None
    return value


def check_choice(config, key: str, choices) -> None:
    """config.<key> must be one of `choices`."""
    value = config_value(config, key)
    if value not in tuple(choices):
        raise ConfigError(
            f"config.{key} must be one of {', '.join(map(repr, choices))}; got {value!r}"
        )


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_positive(config, key: str, *, allow_zero: bool = False, allow_none: bool = False):
    """config.<key> must be a number > 0 (>= 0 with allow_zero; None allowed with allow_none)."""
    value = config_value(config, key)
    if value is None and allow_none:
        return
    if not _is_number(value) or value < 0 or (value == 0 and not allow_zero):
        what = "non-negative" if allow_zero else "positive"
        raise ConfigError(
            f"config.{key} must be {what}{' or None' if allow_none else ''}; got {value!r}"
        )


def check_range(config, key: str, low=None, high=None, *, allow_none: bool = False) -> None:
    """config.<key> must be a number in [low, high] (either bound may be None: unbounded)."""
    value = config_value(config, key)
    if value is None and allow_none:
        return
    if (
        not _is_number(value)
        or (low is not None and value < low)
        or (high is not None and value > high)
    ):
        bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ConfigError(f"config.{key} must be a number in {bounds}; got {value!r}")


def check_device_multiple(config, key: str) -> None:
    """config.<key> (a global batch-like size) must be a positive multiple of the devices."""
    import jax

    value = config_value(config, key)
    if not _is_number(value) or value <= 0 or value % jax.device_count():
        raise ConfigError(
            f"config.{key}={value!r} must be a positive multiple of the device "
            f"count ({jax.device_count()})"
        )


def check_loop_config(config, batch_keys: dict[str, int] | Sequence[str] = ()):
    """Loop settings must be positive; each batch-like size a positive multiple of the devices.

    batch_keys: dotted config keys (a dict's values are ignored; the config's are checked)."""
    for key in ("total_steps", "log_every", "checkpoint_every"):
        check_positive(config, key)
    if "nan_policy" in config:
        check_choice(config, "nan_policy", NAN_POLICIES)
    for key in batch_keys:
        check_device_multiple(config, key)


def expand_user_path(path):
    """`~` and `~user` at the start of a path from a flag or config (absl does not expand
    them after `=`). None, gs:// paths and others pass unchanged."""
    if isinstance(path, str) and path.startswith("~"):
        return os.path.expanduser(path)
    return path


def expand_user_paths(config) -> None:
    """Expands a leading `~` in every string value of the config, in place.

    A config string starting with `~` is a path (data_dir, cache dirs, ...)."""
    for key, value in config.items():
        if hasattr(value, "items"):
            expand_user_paths(value)
        elif isinstance(value, str) and value.startswith("~"):
            config[key] = expand_user_path(value)


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
        return epath.Path(expand_user_path(fl.workdir))
    return epath.Path("runs") / Path(fl["config"].config_filename).stem


# Loggers whose INFO lines a run shows; everything else (absl, jax, orbax, TFDS, XLA: they log
# every file operation at INFO) only its warnings.
OUR_LOGGERS = ("jaxml", "train", "pallas_kernels", "benchmarks")


def configure_logging() -> None:
    """INFO from our module loggers (logging.getLogger(__name__)), WARNING from the rest."""
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("absl").setLevel(logging.WARNING)
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


@contextlib.contextmanager
def exit_on_user_error():
    """User-input errors -> `error: ...` on stderr and exit 2; a non-finite run -> exit 1."""
    try:
        yield
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteError as e:  # the run failed, not the input: status 1
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def run_main(main: Callable[[Any, epath.Path], None]):
    """absl app.run of main(config, workdir): logging, `~` in paths, multi-host init, one-line
    user errors."""

    def _main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        configure_logging()
        fl = flags.FLAGS
        try:
            config = fl.config
            config.keys()  # a config that failed to load raises only when first used
        except OSError as e:  # a config file that does not load
            sys.exit(f"error: {e}")
        with exit_on_user_error():
            expand_user_paths(config)
            maybe_initialize_distributed(
                fl.coordinator_address,
                fl.num_processes,
                fl.process_id,
                heartbeat_timeout=fl.heartbeat_timeout,
            )
            # A second run of the same job skips most compiles. Not across processes: one that
            # hits the cache while a peer compiles reaches the first collective > 30 s ahead,
            # and gloo's setup times out (seen in the 2-process CPU test).
            import jax

            if not jax.distributed.is_initialized():
                enable_compilation_cache()
            main(config, workdir_from_flags())

    app.run(_main)
