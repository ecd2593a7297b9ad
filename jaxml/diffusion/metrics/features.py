"""Running a feature network over a set of images: value conventions and fixed-size batches."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

Array = Any
FeaturesFn = Callable[[Array], Array]
log = logging.getLogger(__name__)


def default_cache_dir() -> str:
    """Where trained feature networks are cached: $JAXML_CACHE_DIR, else ~/.cache/jaxml."""
    return os.environ.get("JAXML_CACHE_DIR", os.path.expanduser("~/.cache/jaxml"))


def to_signed_unit(images: Array) -> Array:
    """uint8 0..255 -> float32 [-1, 1]; floats are in [-1, 1] and clipped to it.

    Clipping does to samples what saving them as an image would: a sampler
    that overshoots [-1, 1] is judged on the images it would actually produce.
    """
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 127.5 - 1.0
    return jnp.clip(images.astype(jnp.float32), -1.0, 1.0)


def quantize_uint8(images: Array) -> np.ndarray:
    """Float images in [-1, 1] -> uint8, as EDM saves samples before FID: round(x·127.5 + 128).

    EDM's generate.py: ``(x * 127.5 + 128).clip(0, 255).to(torch.uint8)`` (the
    +128 rather than +127.5 is EDM's: truncation after +0.5 is rounding).
    uint8 input is returned unchanged.
    """
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return np.clip(np.asarray(images, np.float32) * 127.5 + 128.0, 0, 255).astype(np.uint8)


def features_in_batches(
    features_fn: FeaturesFn,
    images: Array,
    batch_size: int,
    *,
    progress: str | None = None,
    log_every_s: float = 30.0,
) -> np.ndarray:
    """Applies features_fn to fixed-size batches (the last one padded) so jit compiles once.

    progress: a name under which a line with the count, rate and ETA is logged
    every `log_every_s` seconds (None: silent).
    """
    images = np.asarray(images)
    n = images.shape[0]
    if n == 0:
        raise ValueError("no images given")
    outputs = []
    t0 = last_log = time.monotonic()
    for start in range(0, n, batch_size):
        batch = images[start : start + batch_size]
        valid = batch.shape[0]
        if valid < batch_size and n > batch_size:
            pad = np.zeros((batch_size - valid,) + batch.shape[1:], batch.dtype)
            batch = np.concatenate([batch, pad])
        outputs.append(np.asarray(features_fn(batch))[:valid])
        if progress is not None and time.monotonic() - last_log > log_every_s:
            last_log = time.monotonic()
            done = start + valid
            rate = done / (last_log - t0)
            log.info(
                "%s: %d/%d images, %.1f images/s, ETA %.0f s",
                progress,
                done,
                n,
                rate,
                (n - done) / rate,
            )
    return np.concatenate(outputs)
