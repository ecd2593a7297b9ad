"""Persistent XLA compilation cache, and a log line while a step compiles.

The first train step of a run compiles the whole step (17-52 s on a 2-core CPU for
the U-Net configs). `enable_compilation_cache()` points JAX's persistent cache at a
directory, so a second run of the same job (same code, config, shapes, JAX version
and device) loads the compiled executable instead of compiling again.

    enable_compilation_cache()             # before the first jit; see resolve_cache_dir
    with log_compilation("train step"):    # around the first call of a jitted function
        state, metrics = step(state, batch)
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path

import jax

log = logging.getLogger(__name__)

ENV_VAR = "JAXML_COMPILATION_CACHE"
DEFAULT_DIR = Path("~/.cache/jaxml/xla")
OFF = ("", "0", "off", "none", "false")
# Cache only compilations slower than this: tiny jits would only fill the disk.
MIN_COMPILE_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0

_events = {"hits": 0, "misses": 0}
_listening = False


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The cache directory: the argument, else $JAXML_COMPILATION_CACHE, else
    ~/.cache/jaxml/xla; None when the value is "", "0", "off", "none" or "false"."""
    value = os.environ.get(ENV_VAR, str(DEFAULT_DIR)) if cache_dir is None else str(cache_dir)
    if value.strip().lower() in OFF:
        return None
    return Path(value).expanduser()


def enable_compilation_cache(
    cache_dir: str | os.PathLike | None = None, min_compile_seconds: float = MIN_COMPILE_SECONDS
) -> Path | None:
    """Turns on JAX's persistent compilation cache (see `resolve_cache_dir`).

    Call once per process, before the first compilation. Returns the directory
    (None: disabled). A directory that cannot be created disables the cache with
    a warning rather than failing the run.
    """
    path = resolve_cache_dir(cache_dir)
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        log.warning("compilation cache disabled: cannot create %s (%s)", path, e)
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _listen()
    log.info("XLA compilation cache: %s", path)
    return path


def _listen() -> None:
    global _listening
    if _listening:
        return
    _listening = True

    def on_event(event: str, **_) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            _events["hits"] += 1
        elif event == "/jax/compilation_cache/cache_misses":
            _events["misses"] += 1

    jax.monitoring.register_event_listener(on_event)


@contextlib.contextmanager
def log_compilation(what: str, heartbeat_s: float = HEARTBEAT_SECONDS):
    """Logs that `what` is compiling, every `heartbeat_s` while it still is, and then
    how long it took and whether it came from the persistent cache."""
    hits, misses = _events["hits"], _events["misses"]
    start = time.perf_counter()
    log.info("compiling %s (first call) ...", what)
    done = threading.Event()

    def heartbeat():
        while not done.wait(heartbeat_s):
            log.info("still compiling %s: %.0f s", what, time.perf_counter() - start)

    thread = threading.Thread(target=heartbeat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        seconds = time.perf_counter() - start
        new_hits, new_misses = _events["hits"] - hits, _events["misses"] - misses
        if new_hits or new_misses:
            source = f"{new_hits} from the compilation cache, {new_misses} compiled"
        else:
            source = "no persistent-cache lookup"
        log.info("%s ready after %.1f s (%s)", what, seconds, source)
