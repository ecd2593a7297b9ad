"""FD-digits: a small classifier trained on the embedded 8×8 digits defines the feature space.

The features are the classifier's 512-unit hidden layer (`FD_DIGITS_VERSION`
"v2"); v1 used its 64-unit penultimate layer, whose FD moved more between
latent seeds than between training steps (see benchmarks/digits_fd_spread.py).

`digits_feature_extractor` trains the classifier once (~seconds on a CPU)
and caches its parameters in ``cache_dir``; `fd_digits(images)` is the FD of
generated images against the train split; `digits_reference_numbers` gives
the scale (the real-data floor and the FD of pure noise).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxml.diffusion.metrics.features import (
    FeaturesFn,
    default_cache_dir,
    features_in_batches,
    to_signed_unit,
)
from jaxml.diffusion.metrics.frechet import (
    feature_statistics,
    frechet_distance,
    kid,
    memorization_rate,
    precision_recall,
)

Array = Any
PathLike = str | os.PathLike

# Bump when the architecture, data or training recipe changes: caches with
# another tag are retrained instead of silently giving other numbers.
DIGITS_CLASSIFIER_VERSION = "digits-mlp512-64-v1"
DIGITS_CACHE_FILE = "digits_fd_classifier.msgpack"
# FD-digits is computed on the classifier's 512-unit hidden layer: on the 64-unit
# penultimate layer (FD-digits v1) two latent seeds of one checkpoint differed by
# 15-25 % at N = 512, more than training steps (benchmarks/digits_fd_spread.py).
FD_DIGITS_VERSION = "v2: hidden layer (512) of " + DIGITS_CLASSIFIER_VERSION
FEATURE_LAYER = "hidden"
DIGITS_FEATURES = 512
_DIGITS_TRAIN = dict(seed=0, steps=1000, batch_size=128, learning_rate=2e-3, weight_decay=1e-4)


class DigitsClassifier(nn.Module):
    """MLP for 8×8×1 digits in [-1, 1]; `features="hidden"` / `"penultimate"` returns that layer.

    An MLP rather than a CNN: on 8×8 inputs it is as accurate (~98% test) and
    trains in about a second on a CPU, where a small CNN's backward pass takes
    tens of seconds.
    """

    hidden: int = 512
    num_features: int = 64
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, features: str | None = None):
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.hidden)(x))
        if features == "hidden":
            return x
        x = nn.relu(nn.Dense(self.num_features, name="penultimate")(x))
        if features == "penultimate":
            return x
        if features is not None:
            raise ValueError(f"features must be None, 'hidden' or 'penultimate', got {features!r}")
        return nn.Dense(self.num_classes, name="logits")(x)


def digits_preprocess(images: Array) -> Array:
    """Images -> (N, 8, 8, 1) float32 in [-1, 1], the classifier's input.

    Accepts (N, H, W) or (N, H, W, 1), float in [-1, 1] or uint8. H = W must
    be a multiple of 8: larger images (e.g. digits generated at 16×16) are
    average-pooled down to 8×8, which is how a 2× nearest upsampling of the
    data would be inverted exactly.
    """
    images = jnp.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] != 1:
        raise ValueError(f"digits images must be (N, H, W) or (N, H, W, 1), got {images.shape}")
    _, h, w, _ = images.shape
    if h != w or h % 8:
        raise ValueError(
            f"digits images must be square with a side that is a multiple of 8, got {h}×{w}"
        )
    x = to_signed_unit(images)
    if h > 8:
        k = h // 8
        x = nn.avg_pool(x, (k, k), strides=(k, k))
    return x


def _load_digits(
    split: str, data_dir: str | None, image_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The whole digits split as (images float32 (n, 8, 8, 1) in [-1, 1], labels int32);
    with image_size, resized as the training pipeline resizes them (bilinear)."""
    # Imported here: TFDS is slow to import and only this part of the module needs it.
    from jaxml.data import data_source
    from jaxml.data.preprocess import image_generation

    source = data_source("digits", split, data_dir)
    records = [source[i] for i in range(len(source))]
    batch = image_generation(
        {
            "image": np.stack([r["image"] for r in records]),
            "label": np.array([r["label"] for r in records]),
        },
        image_size=image_size,
    )
    return batch["image"], batch["label"]


def train_digits_classifier(
    data_dir: str | None = None,
    *,
    seed: int = 0,
    steps: int = 1000,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    weight_decay: float = 1e-4,
    input_noise_std: float = 0.0,
    hidden: int = 512,
    num_features: int = 64,
) -> tuple[dict, dict]:
    """Trains `DigitsClassifier` on the digits train split; returns (params, info).

    input_noise_std: Gaussian noise added to every training image (a
    regulariser that makes the features vary smoothly off the data manifold,
    where imperfect samples live). info has "test_accuracy" and
    "train_accuracy" (fractions) and the recipe. The whole run is one jitted
    lax.scan over a seeded index plan.
    """
    train_x, train_y = _load_digits("train", data_dir)
    test_x, test_y = _load_digits("test", data_dir)
    model = DigitsClassifier(hidden=hidden, num_features=num_features)
    params = model.init(jax.random.key(seed), train_x[:1])["params"]
    tx = optax.adamw(optax.cosine_decay_schedule(learning_rate, steps), weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    # Epoch-wise permutations, so every image is seen equally often.
    epochs = -(-steps * batch_size // len(train_x))
    plan = np.concatenate([rng.permutation(len(train_x)) for _ in range(epochs)])
    plan = plan[: steps * batch_size].reshape(steps, batch_size)

    def loss_fn(p, x, y):
        logits = model.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    noise_keys = jax.random.split(jax.random.key(seed + 1), steps)

    @jax.jit
    def train(params, x_all, y_all, plan):
        def step(carry, inputs):
            idx, key = inputs
            p, opt_state = carry
            x = x_all[idx]
            if input_noise_std > 0:
                x = x + input_noise_std * jax.random.normal(key, x.shape)
            grads = jax.grad(loss_fn)(p, x, y_all[idx])
            updates, opt_state = tx.update(grads, opt_state, p)
            return (optax.apply_updates(p, updates), opt_state), None

        (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), (plan, noise_keys))
        return params

    params = train(params, jnp.asarray(train_x), jnp.asarray(train_y), jnp.asarray(plan))
    params = jax.tree_util.tree_map(np.asarray, params)

    def accuracy(x, y):
        logits = model.apply({"params": params}, x)
        return float(np.mean(np.argmax(np.asarray(logits), -1) == y))

    info = dict(
        version=DIGITS_CLASSIFIER_VERSION,
        seed=seed,
        input_noise_std=input_noise_std,
        hidden=hidden,
        num_features=num_features,
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        train_accuracy=accuracy(train_x, train_y),
        test_accuracy=accuracy(test_x, test_y),
    )
    return params, info


def _read_digits_cache(path: Path) -> tuple[dict, dict] | None:
    """(params, info) from a cache file of the current version with the right shapes, else None."""
    if not path.exists():
        return None
    try:
        payload = flax.serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # noqa: BLE001 - any unreadable cache is simply rebuilt
        logging.warning("digits classifier cache %s is unreadable (%s); retraining", path, e)
        return None
    version = payload.get("version") if isinstance(payload, dict) else None
    if version != DIGITS_CLASSIFIER_VERSION:
        logging.info(
            "digits classifier cache %s has version %r, want %r; retraining",
            path,
            version,
            DIGITS_CLASSIFIER_VERSION,
        )
        return None
    params, info = payload.get("params"), payload.get("info")
    expected = jax.eval_shape(DigitsClassifier().init, jax.random.key(0), jnp.zeros((1, 8, 8, 1)))[
        "params"
    ]
    try:
        shapes_match = jax.tree_util.tree_all(
            jax.tree_util.tree_map(
                lambda e, p: tuple(e.shape) == tuple(np.shape(p)), expected, params
            )
        )
    except (ValueError, TypeError):  # a different tree structure
        shapes_match = False
    if not shapes_match or not isinstance(info, dict):
        logging.warning("digits classifier cache %s does not match the model; retraining", path)
        return None
    return params, info


def _write_atomically(path: Path, data: bytes):
    """Readers (other processes) see either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def digits_classifier(
    cache_dir: PathLike | None = None, data_dir: str | None = None
) -> tuple[dict, dict]:
    """(params, info) of the FD-digits classifier: read from cache_dir, or trained and cached.

    The cache is `cache_dir/digits_fd_classifier.msgpack` (default cache_dir:
    `default_cache_dir()`). A cache with another version tag, another shape or
    unreadable bytes is retrained and overwritten.
    """
    path = Path(cache_dir or default_cache_dir()) / DIGITS_CACHE_FILE
    cached = _read_digits_cache(path)
    if cached is not None:
        return cached
    params, info = train_digits_classifier(data_dir, **_DIGITS_TRAIN)
    payload = {
        "version": DIGITS_CLASSIFIER_VERSION,
        "params": flax.serialization.to_state_dict(params),
        "info": info,
    }
    _write_atomically(path, flax.serialization.msgpack_serialize(payload))
    logging.info(
        "trained the FD-digits classifier (test accuracy %.4f), cached at %s",
        info["test_accuracy"],
        path,
    )
    return params, info


@jax.jit
def _digits_features(params, images):
    return DigitsClassifier().apply(
        {"params": params}, digits_preprocess(images), features=FEATURE_LAYER
    )


@functools.cache
def _digits_features_cached(cache_dir: str, data_dir: str | None) -> FeaturesFn:
    params, _ = digits_classifier(cache_dir, data_dir)
    # Params are an argument of the jitted function, not constants baked into the program.
    return functools.partial(_digits_features, jax.device_put(params))


def digits_feature_extractor(
    cache_dir: PathLike | None = None, data_dir: str | None = None
) -> FeaturesFn:
    """`features(images) -> (N, 512)` of the FD-digits classifier (trained on first use).

    images: see `digits_preprocess`. The function is jitted and can be used
    inside other jitted code. It is built once per (cache_dir, data_dir) per process.
    """
    return _digits_features_cached(str(cache_dir or default_cache_dir()), data_dir)


def _resized(size: int) -> int | None:
    return None if size == 8 else size


@functools.cache
def _digits_split_features(
    cache_dir: str, data_dir: str | None, split: str, size: int = 8
) -> np.ndarray:
    features_fn = digits_feature_extractor(cache_dir, data_dir)
    images, _ = _load_digits(split, data_dir, _resized(size))
    return np.asarray(features_fn(images), np.float64)


@functools.cache
def _digits_split_statistics(
    cache_dir: str, data_dir: str | None, split: str, size: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    return feature_statistics(_digits_split_features(cache_dir, data_dir, split, size))


def digits_statistics(
    split: str = "train",
    cache_dir: PathLike | None = None,
    data_dir: str | None = None,
    size: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the classifier features over a digits split (memoized per process);
    size > 8: the split resized to size×size as the training pipeline does (bilinear), then
    pooled back by the classifier's preprocessing, as generated images of that size are."""
    return _digits_split_statistics(str(cache_dir or default_cache_dir()), data_dir, split, size)


def fd_digits(
    images: Array,
    *,
    cache_dir: PathLike | None = None,
    data_dir: str | None = None,
    batch_size: int = 1024,
) -> float:
    """FD-digits of `images` against the digits train split (lower is better).

    images: (N, 8, 8[, 1]) (or 16×16, …, see `digits_preprocess`), in [-1, 1]
    or uint8. Use the same N when comparing samplers: FD is biased upward at
    small N. `digits_reference_numbers` gives the floor and the noise ceiling.
    """
    features_fn = digits_feature_extractor(cache_dir, data_dir)
    mu, sigma = feature_statistics(features_in_batches(features_fn, images, batch_size))
    mu_ref, sigma_ref = digits_statistics("train", cache_dir, data_dir, np.shape(images)[1])
    return frechet_distance(mu, sigma, mu_ref, sigma_ref)


def digits_reference_floor(cache_dir: PathLike | None = None, data_dir: str | None = None) -> float:
    """FD-digits of the test split (360 real images) vs the train split: the best to hope for."""
    mu, sigma = digits_statistics("test", cache_dir, data_dir)
    mu_ref, sigma_ref = digits_statistics("train", cache_dir, data_dir)
    return frechet_distance(mu, sigma, mu_ref, sigma_ref)


def digits_reference_numbers(
    cache_dir: PathLike | None = None,
    data_dir: str | None = None,
    *,
    num_noise: int = 360,
    seed: int = 0,
) -> dict:
    """The scale of FD-digits: classifier accuracy, the real-data floor and pure-noise ceilings.

    Returns {"test_accuracy", "fd_test_vs_train" (the floor, 360 images),
    "fd_uniform_noise", "fd_gaussian_noise"} where the noise images are
    num_noise (default: as many as the test split) draws of U(-1, 1) and of
    N(0, 1) clipped to [-1, 1].
    """
    _, info = digits_classifier(cache_dir, data_dir)
    rng = np.random.default_rng(seed)
    shape = (num_noise, 8, 8, 1)
    uniform = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
    gaussian = np.clip(rng.standard_normal(shape), -1.0, 1.0).astype(np.float32)
    return {
        "test_accuracy": info["test_accuracy"],
        "fd_test_vs_train": digits_reference_floor(cache_dir, data_dir),
        "fd_uniform_noise": fd_digits(uniform, cache_dir=cache_dir, data_dir=data_dir),
        "fd_gaussian_noise": fd_digits(gaussian, cache_dir=cache_dir, data_dir=data_dir),
    }


# -----------------------------------------------------------------------------
# The digits evaluation: one function for the training eval, train.sample, benchmarks.
# -----------------------------------------------------------------------------


def fd_floor_curve(
    held_out: np.ndarray, reference_stats, *, draws: int = 8, seed: int = 0
) -> tuple[float, float]:
    """(c, b) of FD(n) ≈ c + b / n for n real held-out images against `reference_stats`.

    FD's bias falls as 1/n in the sample count (Chong & Forsyth 2020), so the
    floor at any N, the FD that N fresh real images would score, is c + b/N:
    fitted by least squares to the mean FD of `draws` random subsets (without
    replacement) at n = ¼, ½, ¾ and all of the held-out images.
    """
    rng = np.random.default_rng(seed)
    total = len(held_out)
    sizes = sorted({max(8, total // 4), total // 2, (3 * total) // 4, total})
    means = []
    for n in sizes:
        reps = 1 if n == total else draws
        values = [
            frechet_distance(
                *feature_statistics(held_out[rng.choice(total, n, replace=False)]),
                *reference_stats,
            )
            for _ in range(reps)
        ]
        means.append(np.mean(values))
    design = np.stack([np.ones(len(sizes)), 1.0 / np.asarray(sizes, np.float64)], 1)
    (c, b), *_ = np.linalg.lstsq(design, np.asarray(means), rcond=None)
    return float(c), float(b)


@functools.cache
def _floor_curve_cached(
    cache: str, data_dir, held_out: str, reference: str, seed: int, size: int = 8
):
    """fd_floor_curve, also kept on disk (25 FDs of 512-d features: a minute on 2 cores, paid
    once, not by every process). The key hashes the features themselves, so a retrained
    classifier or other data can never reuse a stale floor."""
    features = _digits_split_features(cache, data_dir, held_out, size)
    stats = _digits_split_statistics(cache, data_dir, reference, size)
    digest = hashlib.sha256()
    for array in (features, *stats):
        digest.update(np.ascontiguousarray(array, np.float64).tobytes())
    digest.update(f"{seed}".encode())
    path = Path(cache) / f"digits_fd_floor_{digest.hexdigest()[:20]}.json"
    try:
        saved = json.loads(path.read_text())
        return float(saved["c"]), float(saved["b"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent or unreadable: compute it
    c, b = fd_floor_curve(features, stats, seed=seed)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"c": c, "b": b, "held_out": held_out, "reference": reference}))
        os.replace(tmp, path)  # atomic: concurrent processes never read half a file
    except OSError as e:
        logging.warning("could not cache the FD floor in %s (%s)", path, e)
    return c, b


def evaluate_digits(
    images: Array,
    *,
    data_dir: str | None = None,
    cache_dir: PathLike | None = None,
    k: int = 3,
    seed: int = 0,
    batch_size: int = 1024,
) -> dict:
    """Every digits sample-quality number for one set of generated images (lower FD is better).

    In the FD-digits feature space (`digits_feature_extractor`), for N = len(images):

    * fd_train / fd_test: FD against the train split (1,437 images) / the test
      split (360, never trained on).
    * fd_train_floor / fd_test_floor: what N real unseen images would score
      against the same reference, at the SAME N (FD is biased upward at small
      N): `fd_floor_curve` fitted on test (resp. train) images, at N.
    * kid_train, kid_train_se (and _test): KID (unbiased, so 0 for a perfect
      model at any N) with its standard error (`frechet.kid`).
    * precision / recall: Kynkäänniemi et al. 2019 with k-NN balls (k = 3)
      against the train features.
    * memorization_rate: share of samples whose nearest train image (pixels)
      is closer than 95 % of real test images' nearest train images are
      (`frechet.memorization_rate`; base rate 0.05 for new data, 1 for copies).

    images: (N, 8, 8[, 1]) (or 16×16, …; see `digits_preprocess`), in [-1, 1]
    or uint8. Compare numbers at equal N, several latent seeds per point. Larger images are
    scored against the splits resized to their size as the training pipeline resizes them
    (bilinear; the classifier pools every image back to 8×8): the reference is the data
    the model was trained on. Against the raw 8×8 splits, the blur of that round trip alone
    would score FD ≈ 20 at 16×16 (floor 1.7 at 8×8, N = 2,048).
    """
    cache = str(cache_dir or default_cache_dir())
    size = int(np.shape(images)[1])
    features_fn = digits_feature_extractor(cache, data_dir)
    features = np.asarray(features_in_batches(features_fn, images, batch_size), np.float64)
    n = len(features)
    train_f = _digits_split_features(cache, data_dir, "train", size)
    test_f = _digits_split_features(cache, data_dir, "test", size)
    train_stats = _digits_split_statistics(cache, data_dir, "train", size)
    test_stats = _digits_split_statistics(cache, data_dir, "test", size)
    stats = feature_statistics(features)
    c_train, b_train = _floor_curve_cached(cache, data_dir, "test", "train", seed, size)
    c_test, b_test = _floor_curve_cached(cache, data_dir, "train", "test", seed, size)
    result = {
        "num_samples": n,
        "fd_train": frechet_distance(*stats, *train_stats),
        "fd_train_floor": c_train + b_train / n,
        "fd_test": frechet_distance(*stats, *test_stats),
        "fd_test_floor": c_test + b_test / n,
    }
    for name, reference in (("train", train_f), ("test", test_f)):
        scores = kid(features, reference, seed=seed)
        result[f"kid_{name}"] = scores["kid"]
        result[f"kid_{name}_se"] = scores["kid_se"]
    result.update(precision_recall(features, train_f, k=k))
    pixels = lambda x: np.asarray(digits_preprocess(x), np.float64).reshape(len(x), -1)
    train_x, _ = _load_digits("train", data_dir, _resized(size))
    test_x, _ = _load_digits("test", data_dir, _resized(size))
    memo = memorization_rate(pixels(np.asarray(images)), pixels(train_x), pixels(test_x))
    result["memorization_rate"] = memo["memorization_rate"]
    result["memorization_base_rate"] = memo["memorization_base_rate"]
    return result
