"""Sample-quality metrics: Fréchet distance, FD-digits, and FID with Inception-v3.

Three pieces, from general to specific:

* `frechet_distance` / `feature_statistics`: the Fréchet (2-Wasserstein)
  distance between two Gaussians fitted to feature sets,
  ``||mu1 - mu2||² + tr(S1 + S2 - 2 (S1 S2)^½)``, in float64 numpy.

* **FD-digits**, for the embedded 8×8 digits: the feature space is the
  penultimate layer (64 ReLU units) of a small MLP classifier trained, seeded, on the
  digits train split. `digits_feature_extractor` trains it once (~seconds on a
  CPU) and caches the parameters in ``cache_dir``; `fd_digits(images)` is the
  FD of generated images against the train split. `digits_reference_numbers`
  gives the scale: the train-vs-test floor and the FD of pure noise.

* **FID**: Inception-v3 pool3 features (2048-d) with the weights of the
  TensorFlow FID graph (``inception-2015-12-05``) as ported by pytorch-fid.
  The user provides the weights file; nothing is downloaded (see
  `load_inception_params` for the file and how to get it).

FD is biased upward at small sample sizes (the covariance estimate is noisy),
so compare numbers computed from the same number of images.

Images everywhere are NHWC, either float in [-1, 1] (the EDM convention of
`jaxml.data.preprocess.image_generation`; clipped to it) or uint8 in 0..255.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = Any
PathLike = str | os.PathLike
FeaturesFn = Callable[[Array], Array]

# -----------------------------------------------------------------------------
# Fréchet distance.
# -----------------------------------------------------------------------------


def feature_statistics(features: Array) -> tuple[np.ndarray, np.ndarray]:
    """(N, F) features -> (mu (F,), sigma (F, F)) in float64; sigma is the unbiased covariance."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, F), got shape {features.shape}")
    if features.shape[0] < 2:
        raise ValueError(
            f"need at least 2 feature vectors for a covariance, got {features.shape[0]}"
        )
    if not np.all(np.isfinite(features)):
        raise ValueError("features contain NaN or Inf (are the images finite?)")
    mu = features.mean(axis=0)
    sigma = np.atleast_2d(np.cov(features, rowvar=False))
    return mu, sigma


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative roundoff eigenvalues -> 0)."""
    eigvals, eigvecs = np.linalg.eigh(matrix)
    return (eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))) @ eigvecs.T


def frechet_distance(mu1: Array, sigma1: Array, mu2: Array, sigma2: Array) -> float:
    """Fréchet distance ``||mu1 - mu2||² + tr(S1) + tr(S2) - 2 tr((S1 S2)^½)`` between Gaussians.

    The usual implementation calls scipy.linalg.sqrtm on the non-symmetric
    product S1 S2, which returns tiny imaginary parts and fails on singular
    covariances. Here tr((S1 S2)^½) is computed as tr((S1^½ S2 S1^½)^½): the
    same eigenvalues, but of a symmetric PSD matrix, so `eigh` is exact and
    stable, and nothing is complex. Returns a Python float ≥ 0.
    """
    mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"means must be vectors of one length, got {mu1.shape} and {mu2.shape}")
    dim = mu1.shape[0]
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (dim, dim):
            raise ValueError(f"{name} must be ({dim}, {dim}) to match the means, got {sigma.shape}")
    for name, value in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name} contains NaN or Inf")
    # Covariances from np.cov are symmetric up to roundoff; make them exactly so for eigh.
    sigma1 = 0.5 * (sigma1 + sigma1.T)
    sigma2 = 0.5 * (sigma2 + sigma2.T)
    sqrt1 = _psd_sqrt(sigma1)
    middle = sqrt1 @ sigma2 @ sqrt1
    eigvals = np.linalg.eigvalsh(0.5 * (middle + middle.T))
    trace_covmean = np.sqrt(np.clip(eigvals, 0.0, None)).sum()
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_covmean
    # FD is a squared distance; roundoff can leave identical statistics at -1e-12.
    return float(max(distance, 0.0))


def _features_in_batches(features_fn: FeaturesFn, images: Array, batch_size: int) -> np.ndarray:
    """Applies features_fn to fixed-size batches (the last one padded) so jit compiles once."""
    images = np.asarray(images)
    n = images.shape[0]
    if n == 0:
        raise ValueError("no images given")
    outputs = []
    for start in range(0, n, batch_size):
        batch = images[start : start + batch_size]
        valid = batch.shape[0]
        if valid < batch_size and n > batch_size:
            pad = np.zeros((batch_size - valid,) + batch.shape[1:], batch.dtype)
            batch = np.concatenate([batch, pad])
        outputs.append(np.asarray(features_fn(batch))[:valid])
    return np.concatenate(outputs)


def _to_signed_unit(images: Array) -> Array:
    """uint8 0..255 -> float32 [-1, 1]; floats are in [-1, 1] and clipped to it.

    Clipping does to samples what saving them as an image would: a sampler
    that overshoots [-1, 1] is judged on the images it would actually produce.
    """
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 127.5 - 1.0
    return jnp.clip(images.astype(jnp.float32), -1.0, 1.0)


# -----------------------------------------------------------------------------
# FD-digits: a small classifier on the embedded 8×8 digits defines the features.
# -----------------------------------------------------------------------------

# Bump when the architecture, data or training recipe changes: caches with
# another tag are retrained instead of silently giving other numbers.
DIGITS_CLASSIFIER_VERSION = "digits-mlp512-64-v1"
DIGITS_CACHE_FILE = "digits_fd_classifier.msgpack"
DIGITS_FEATURES = 64
_DIGITS_TRAIN = dict(seed=0, steps=1000, batch_size=128, learning_rate=2e-3, weight_decay=1e-4)


def default_cache_dir() -> str:
    """$JAXML_CACHE_DIR, else ~/.cache/jaxml."""
    return os.environ.get("JAXML_CACHE_DIR", os.path.expanduser("~/.cache/jaxml"))


class DigitsClassifier(nn.Module):
    """MLP for 8×8×1 digits in [-1, 1]; `features=True` returns the penultimate layer.

    An MLP rather than a CNN: on 8×8 inputs it is as accurate (~98% test) and
    trains in about a second on a CPU, where a small CNN's backward pass takes
    tens of seconds.
    """

    hidden: int = 512
    num_features: int = DIGITS_FEATURES
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, features: bool = False):
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.hidden)(x))
        x = nn.relu(nn.Dense(self.num_features, name="penultimate")(x))
        if features:
            return x
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
    x = _to_signed_unit(images)
    if h > 8:
        k = h // 8
        x = nn.avg_pool(x, (k, k), strides=(k, k))
    return x


def _load_digits(split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The whole digits split as (images float32 (n, 8, 8, 1) in [-1, 1], labels int32)."""
    # Imported here: TFDS is slow to import and only this part of the module needs it.
    from jaxml.data import data_source
    from jaxml.data.preprocess import image_generation

    source = data_source("digits", split, data_dir)
    records = [source[i] for i in range(len(source))]
    batch = image_generation(
        {
            "image": np.stack([r["image"] for r in records]),
            "label": np.array([r["label"] for r in records]),
        }
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
) -> tuple[dict, dict]:
    """Trains `DigitsClassifier` on the digits train split; returns (params, info).

    info has "test_accuracy" and "train_accuracy" (fractions) and the recipe.
    The whole run is one jitted lax.scan over a seeded index plan.
    """
    train_x, train_y = _load_digits("train", data_dir)
    test_x, test_y = _load_digits("test", data_dir)
    model = DigitsClassifier()
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

    @jax.jit
    def train(params, x_all, y_all, plan):
        def step(carry, idx):
            p, opt_state = carry
            grads = jax.grad(loss_fn)(p, x_all[idx], y_all[idx])
            updates, opt_state = tx.update(grads, opt_state, p)
            return (optax.apply_updates(p, updates), opt_state), None

        (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), plan)
        return params

    params = train(params, jnp.asarray(train_x), jnp.asarray(train_y), jnp.asarray(plan))
    params = jax.tree_util.tree_map(np.asarray, params)

    def accuracy(x, y):
        logits = model.apply({"params": params}, x)
        return float(np.mean(np.argmax(np.asarray(logits), -1) == y))

    info = dict(
        version=DIGITS_CLASSIFIER_VERSION,
        seed=seed,
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
    return DigitsClassifier().apply({"params": params}, digits_preprocess(images), features=True)


@functools.cache
def _digits_features_cached(cache_dir: str, data_dir: str | None) -> FeaturesFn:
    params, _ = digits_classifier(cache_dir, data_dir)
    # Params are an argument of the jitted function, not constants baked into the program.
    return functools.partial(_digits_features, jax.device_put(params))


def digits_feature_extractor(
    cache_dir: PathLike | None = None, data_dir: str | None = None
) -> FeaturesFn:
    """`features(images) -> (N, 64)` of the FD-digits classifier (trained on first use).

    images: see `digits_preprocess`. The function is jitted and can be used
    inside other jitted code. It is built once per (cache_dir, data_dir) per process.
    """
    return _digits_features_cached(str(cache_dir or default_cache_dir()), data_dir)


@functools.cache
def _digits_split_statistics(
    cache_dir: str, data_dir: str | None, split: str
) -> tuple[np.ndarray, np.ndarray]:
    features_fn = digits_feature_extractor(cache_dir, data_dir)
    images, _ = _load_digits(split, data_dir)
    return feature_statistics(features_fn(images))


def digits_statistics(
    split: str = "train", cache_dir: PathLike | None = None, data_dir: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the classifier features over a digits split (memoized per process)."""
    return _digits_split_statistics(str(cache_dir or default_cache_dir()), data_dir, split)


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
    mu, sigma = feature_statistics(_features_in_batches(features_fn, images, batch_size))
    mu_ref, sigma_ref = digits_statistics("train", cache_dir, data_dir)
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
# FID: Inception-v3 pool3 features, with the weights of the TF FID graph.
# -----------------------------------------------------------------------------

INCEPTION_SIZE = 299
INCEPTION_FEATURES = 2048
INCEPTION_WEIGHTS_FILE = "pt_inception-2015-12-05.npz"
INCEPTION_PTH_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth"
)
INCEPTION_CONVERT_COMMAND = (
    'python -c "import numpy as np, torch; '
    "sd = torch.load('pt_inception-2015-12-05-6726825d.pth', map_location='cpu'); "
    "np.savez('" + INCEPTION_WEIGHTS_FILE + "', **{k: v.numpy() for k, v in sd.items()})\""
)


class InceptionWeightsError(ValueError):
    """The Inception weights file exists but is not the expected set of arrays."""


class _FrozenBatchNorm(nn.Module):
    """Inference-only batch norm: all four statistics are plain (frozen) parameters."""

    epsilon: float = 1e-3

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        mean = self.param("mean", nn.initializers.zeros, (c,))
        var = self.param("var", nn.initializers.ones, (c,))
        return (x - mean) * (scale * jax.lax.rsqrt(var + self.epsilon)) + bias


class _ConvBN(nn.Module):
    """torchvision's BasicConv2d: conv without bias, batch norm (eps 1e-3), ReLU."""

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: str | Sequence[tuple[int, int]] = "VALID"
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(
            self.features,
            self.kernel_size,
            self.strides,
            padding=self.padding,
            use_bias=False,
            precision=self.precision,
            name="conv",
        )(x)
        return nn.relu(_FrozenBatchNorm(name="bn")(x))


def _pad(h: int, w: int):
    return ((h, h), (w, w))


def _avg_pool_3x3(x):
    # TF's average pool (and pytorch-fid's patch) leaves the padded zeros out of the mean.
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=_pad(1, 1), count_include_pad=False)


class _InceptionA(nn.Module):
    pool_features: int
    precision: Any

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(_ConvBN, precision=self.precision)
        b1 = conv(64, (1, 1), name="branch1x1")(x)
        b5 = conv(48, (1, 1), name="branch5x5_1")(x)
        b5 = conv(64, (5, 5), padding=_pad(2, 2), name="branch5x5_2")(b5)
        b3 = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = conv(96, (3, 3), padding=_pad(1, 1), name="branch3x3dbl_2")(b3)
        b3 = conv(96, (3, 3), padding=_pad(1, 1), name="branch3x3dbl_3")(b3)
        bp = conv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class _InceptionB(nn.Module):
    precision: Any

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(_ConvBN, precision=self.precision)
        b3 = conv(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
        bd = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = conv(96, (3, 3), padding=_pad(1, 1), name="branch3x3dbl_2")(bd)
        bd = conv(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(bd)
        bp = nn.max_pool(x, (3, 3), strides=(2, 2))
        return jnp.concatenate([b3, bd, bp], axis=-1)


class _InceptionC(nn.Module):
    channels_7x7: int
    precision: Any

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(_ConvBN, precision=self.precision)
        c = self.channels_7x7
        b1 = conv(192, (1, 1), name="branch1x1")(x)
        b7 = conv(c, (1, 1), name="branch7x7_1")(x)
        b7 = conv(c, (1, 7), padding=_pad(0, 3), name="branch7x7_2")(b7)
        b7 = conv(192, (7, 1), padding=_pad(3, 0), name="branch7x7_3")(b7)
        bd = conv(c, (1, 1), name="branch7x7dbl_1")(x)
        bd = conv(c, (7, 1), padding=_pad(3, 0), name="branch7x7dbl_2")(bd)
        bd = conv(c, (1, 7), padding=_pad(0, 3), name="branch7x7dbl_3")(bd)
        bd = conv(c, (7, 1), padding=_pad(3, 0), name="branch7x7dbl_4")(bd)
        bd = conv(192, (1, 7), padding=_pad(0, 3), name="branch7x7dbl_5")(bd)
        bp = conv(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class _InceptionD(nn.Module):
    precision: Any

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(_ConvBN, precision=self.precision)
        b3 = conv(192, (1, 1), name="branch3x3_1")(x)
        b3 = conv(320, (3, 3), strides=(2, 2), name="branch3x3_2")(b3)
        b7 = conv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = conv(192, (1, 7), padding=_pad(0, 3), name="branch7x7x3_2")(b7)
        b7 = conv(192, (7, 1), padding=_pad(3, 0), name="branch7x7x3_3")(b7)
        b7 = conv(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(b7)
        bp = nn.max_pool(x, (3, 3), strides=(2, 2))
        return jnp.concatenate([b3, b7, bp], axis=-1)


class _InceptionE(nn.Module):
    max_pool: bool  # the FID graph's last block (Mixed_7c) max-pools its pool branch
    precision: Any

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(_ConvBN, precision=self.precision)
        b1 = conv(320, (1, 1), name="branch1x1")(x)
        b3 = conv(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate(
            [
                conv(384, (1, 3), padding=_pad(0, 1), name="branch3x3_2a")(b3),
                conv(384, (3, 1), padding=_pad(1, 0), name="branch3x3_2b")(b3),
            ],
            axis=-1,
        )
        bd = conv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = conv(384, (3, 3), padding=_pad(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate(
            [
                conv(384, (1, 3), padding=_pad(0, 1), name="branch3x3dbl_3a")(bd),
                conv(384, (3, 1), padding=_pad(1, 0), name="branch3x3dbl_3b")(bd),
            ],
            axis=-1,
        )
        if self.max_pool:
            pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=_pad(1, 1))
        else:
            pooled = _avg_pool_3x3(x)
        bp = conv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
    """Inception-v3 up to pool3, as in the TF FID graph: (N, H, W, 3) in [-1, 1] -> (N, 2048).

    The architecture of pytorch-fid's `fid_inception_v3` (torchvision's
    Inception3 with the FID patches: average pools exclude padding, Mixed_7c
    max-pools its pool branch). Submodule names are torchvision's, so the
    weights map one to one. Fully convolutional: any H, W ≥ 75 runs, but FID
    is defined at 299×299 (see `inception_preprocess`). Convolutions run at
    HIGHEST precision by default so features do not depend on TF32 defaults.
    """

    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        p = self.precision
        conv = functools.partial(_ConvBN, precision=p)
        x = conv(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)
        x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = conv(64, (3, 3), padding=_pad(1, 1), name="Conv2d_2b_3x3")(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
        x = conv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
        x = _InceptionA(32, p, name="Mixed_5b")(x)
        x = _InceptionA(64, p, name="Mixed_5c")(x)
        x = _InceptionA(64, p, name="Mixed_5d")(x)
        x = _InceptionB(p, name="Mixed_6a")(x)
        x = _InceptionC(128, p, name="Mixed_6b")(x)
        x = _InceptionC(160, p, name="Mixed_6c")(x)
        x = _InceptionC(160, p, name="Mixed_6d")(x)
        x = _InceptionC(192, p, name="Mixed_6e")(x)
        x = _InceptionD(p, name="Mixed_7a")(x)
        x = _InceptionE(max_pool=False, precision=p, name="Mixed_7b")(x)
        x = _InceptionE(max_pool=True, precision=p, name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))  # pool3


def inception_preprocess(images: Array, size: int = INCEPTION_SIZE) -> Array:
    """Images -> (N, size, size, 3) float32 in [-1, 1], the way pytorch-fid feeds Inception.

    images: (N, H, W) or (N, H, W, C) with C in {1, 3}, float in [-1, 1] or
    uint8 (x / 127.5 - 1, which is pytorch-fid's 2 * (x / 255) - 1).
    Grayscale is repeated to 3 channels. Resizing is bilinear with half-pixel
    centers and no antialiasing: torch's F.interpolate(mode="bilinear",
    align_corners=False), as pytorch-fid does. (The original TF code resized
    inside its graph with slightly different sampling; FIDs differ by ~0.1%.)
    """
    images = jnp.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"images must be (N, H, W) or (N, H, W, C) with C in (1, 3), got shape {images.shape}"
        )
    x = _to_signed_unit(images)
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    if x.shape[1:3] != (size, size):
        x = jax.image.resize(x, (x.shape[0], size, size, 3), "bilinear", antialias=False)
    return x


def default_inception_weights_path() -> Path:
    """$JAXML_INCEPTION_WEIGHTS, else <cache dir>/pt_inception-2015-12-05.npz."""
    env = os.environ.get("JAXML_INCEPTION_WEIGHTS")
    return Path(env) if env else Path(default_cache_dir()) / INCEPTION_WEIGHTS_FILE


def _missing_weights_message(path: Path) -> str:
    return (
        f"Inception-v3 FID weights not found at {path}. jaxml never downloads them. "
        f"On a machine with internet access, fetch pytorch-fid's port of the TF FID graph "
        f"(inception-2015-12-05): {INCEPTION_PTH_URL} ; convert it to a plain .npz of the "
        f"state dict (needs torch, once): {INCEPTION_CONVERT_COMMAND} ; then put "
        f"{INCEPTION_WEIGHTS_FILE} at {path} (or pass weights_path=..., or set "
        f"JAXML_INCEPTION_WEIGHTS=/path/to/{INCEPTION_WEIGHTS_FILE})."
    )


# Our leaf name -> torchvision state-dict suffix; conv kernels are HWIO here, OIHW there.
_BN_TORCH_NAMES = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def _torch_key(path: tuple[str, ...]) -> str:
    *modules, layer, leaf = path
    if layer == "conv" and leaf == "kernel":
        return ".".join([*modules, "conv", "weight"])
    if layer == "bn" and leaf in _BN_TORCH_NAMES:
        return ".".join([*modules, "bn", _BN_TORCH_NAMES[leaf]])
    raise ValueError(f"unexpected Inception parameter {'/'.join(path)}")


@functools.lru_cache(maxsize=1)
def _inception_param_shapes() -> dict:
    """Flat {path: ShapeDtypeStruct} of InceptionV3 params, without running anything (read-only)."""
    shapes = jax.eval_shape(InceptionV3().init, jax.random.key(0), jnp.zeros((1, 75, 75, 3)))
    return flax.traverse_util.flatten_dict(shapes["params"])


def save_inception_params(params: Mapping, path: PathLike):
    """Writes InceptionV3 params as the .npz that `load_inception_params` reads.

    The keys and layouts are those of pytorch-fid's state dict (e.g.
    "Mixed_5b.branch1x1.conv.weight" as (out, in, kh, kw)), so this is also
    the format of a converted `pt_inception-2015-12-05-6726825d.pth`.
    """
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    arrays = {}
    for key_path, value in flat.items():
        value = np.asarray(value, np.float32)
        if key_path[-1] == "kernel":
            value = value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        arrays[_torch_key(key_path)] = value
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # a file object, so np.savez does not append ".npz"
        np.savez(f, **arrays)


def load_inception_params(path: PathLike | None = None) -> dict:
    """InceptionV3 params from the FID weights file (never downloaded).

    The file: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (the TF FID
    graph's weights, ported; `INCEPTION_PTH_URL`; torch.hub checks that its
    sha256 starts with the 6726825d in its name) converted once to a plain
    .npz of its state dict with `INCEPTION_CONVERT_COMMAND`, i.e.
    ``np.savez(out, **{k: v.numpy() for k, v in torch.load(pth).items()})``.
    Unused entries (fc.*, num_batches_tracked) are ignored. Default path:
    `default_inception_weights_path()`. Missing file: FileNotFoundError saying
    where to put it; wrong contents: InceptionWeightsError naming the arrays.
    """
    path = Path(path) if path is not None else default_inception_weights_path()
    if not path.is_file():
        raise FileNotFoundError(_missing_weights_message(path))
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as e:  # noqa: BLE001 - name the file whatever numpy choked on
        raise InceptionWeightsError(
            f"cannot read {path} as an .npz of named arrays ({type(e).__name__}: {e}). "
            f"Convert pytorch-fid's weights with: {INCEPTION_CONVERT_COMMAND}"
        ) from None
    flat, missing, wrong = {}, [], []
    for key_path, spec in _inception_param_shapes().items():
        key = _torch_key(key_path)
        if key not in arrays:
            missing.append(key)
            continue
        value = arrays[key]
        if key_path[-1] == "kernel":
            value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value  # OIHW -> HWIO
        if value.shape != spec.shape:
            want = spec.shape
            if key_path[-1] == "kernel":
                want = (want[3], want[2], want[0], want[1])  # as the file stores it: OIHW
            wrong.append(f"{key} is {arrays[key].shape}, want {want}")
            continue
        flat[key_path] = np.asarray(value, np.float32)
    if missing or wrong:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if wrong:
            details.append(f"{len(wrong)} with the wrong shape (e.g. {', '.join(wrong[:3])})")
        raise InceptionWeightsError(
            f"{path} is not the pytorch-fid Inception state dict: {'; '.join(details)}. "
            f"Expected a conversion of {INCEPTION_PTH_URL} made with: {INCEPTION_CONVERT_COMMAND}"
        )
    return flax.traverse_util.unflatten_dict(flat)


def inception_feature_extractor(
    weights_path: PathLike | None = None,
    *,
    params: Mapping | None = None,
    precision: Any = jax.lax.Precision.HIGHEST,
) -> FeaturesFn:
    """`features(images) -> (N, 2048)` pool3 features; jitted, preprocessing included.

    params: InceptionV3 params (default: `load_inception_params(weights_path)`).
    images: see `inception_preprocess`.
    """
    if params is None:
        params = load_inception_params(weights_path)
    # 22M weights: passed as an argument, not baked into the program as constants. The
    # jitted function is shared, so extractors with different params compile once.
    return functools.partial(_inception_features, jax.device_put(params), precision=precision)


@functools.partial(jax.jit, static_argnames=("precision",))
def _inception_features(params, images, precision=jax.lax.Precision.HIGHEST):
    return InceptionV3(precision=precision).apply({"params": params}, inception_preprocess(images))


def init_inception_params(seed: int = 0) -> dict:
    """Random InceptionV3 params (He-scaled kernels, near-identity batch norms), made in numpy.

    For tests and timing only: FID needs the real weights (`load_inception_params`).
    Much faster than `InceptionV3().init`, whose 22M-number RNG program compiles slowly.
    """
    rng = np.random.default_rng(seed)
    flat = {}
    for key_path, spec in _inception_param_shapes().items():
        shape, leaf = spec.shape, key_path[-1]
        if leaf == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        elif leaf in ("scale", "var"):
            value = rng.uniform(0.5, 1.5, shape)
        else:  # bias, mean
            value = 0.1 * rng.standard_normal(shape)
        flat[key_path] = value.astype(np.float32)
    return flax.traverse_util.unflatten_dict(flat)


def load_reference_stats(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) from an .npz with arrays "mu" and "sigma" (ours, pytorch-fid's, TTUR's)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"FID reference statistics not found at {path}; "
            "make them with compute_reference_stats(images, out_path)"
        )
    with np.load(path, allow_pickle=False) as data:
        if "mu" not in data.files or "sigma" not in data.files:
            raise ValueError(
                f"{path} has arrays {data.files}; FID statistics need 'mu' and 'sigma'"
            )
        return data["mu"].astype(np.float64), data["sigma"].astype(np.float64)


def compute_reference_stats(
    images: Array,
    out_path: PathLike | None = None,
    *,
    weights_path: PathLike | None = None,
    params: Mapping | None = None,
    features_fn: FeaturesFn | None = None,
    batch_size: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of Inception pool3 features over `images`; also saved to out_path (.npz).

    features_fn replaces the Inception extractor (e.g. an extractor built once
    and reused); otherwise it is built from params or weights_path.
    """
    if features_fn is None:
        features_fn = inception_feature_extractor(weights_path, params=params)
    mu, sigma = feature_statistics(_features_in_batches(features_fn, images, batch_size))
    if out_path is not None:
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with open(out_path, "wb") as f:
            np.savez(f, mu=mu, sigma=sigma)
    return mu, sigma


def fid(
    images: Array,
    reference_stats: PathLike | tuple[Array, Array] | Mapping,
    *,
    weights_path: PathLike | None = None,
    params: Mapping | None = None,
    features_fn: FeaturesFn | None = None,
    batch_size: int = 50,
) -> float:
    """FID of `images` against reference statistics (an .npz path, (mu, sigma), or a mapping).

    The standard protocol uses 50,000 generated images and the statistics of
    the training set; fewer images give a higher (biased) number.
    """
    if isinstance(reference_stats, (str, os.PathLike)):
        mu_ref, sigma_ref = load_reference_stats(reference_stats)
    elif isinstance(reference_stats, Mapping):
        mu_ref, sigma_ref = reference_stats["mu"], reference_stats["sigma"]
    else:
        mu_ref, sigma_ref = reference_stats
    mu, sigma = compute_reference_stats(
        images,
        weights_path=weights_path,
        params=params,
        features_fn=features_fn,
        batch_size=batch_size,
    )
    return frechet_distance(mu, sigma, mu_ref, sigma_ref)
