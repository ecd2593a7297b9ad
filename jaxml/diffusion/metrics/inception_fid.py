"""FID: Fréchet distance of Inception-v3 pool3 features, computed the way EDM / pytorch-fid do.

The network is `jaxml.models.inception.InceptionV3` with the weights of the
TF FID graph (``inception-2015-12-05``) as ported by pytorch-fid; the user
provides them once (nothing is downloaded): ``python -m jaxml.diffusion.fid
convert --src=pt_inception-2015-12-05-6726825d.pth --out=...`` writes the
.npz that `load_inception_params` reads. The protocol (EDM's `fid.py`):
generated float images are quantised to uint8 first (`quantize_uint8`),
50,000 of them, against the statistics of the training set made by ``python
-m jaxml.diffusion.fid stats`` (uint8 images as stored). `kid` in
`jaxml.diffusion.metrics.frechet` takes the same features.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxml.diffusion.metrics.features import (
    FeaturesFn,
    default_cache_dir,
    features_in_batches,
    quantize_uint8,
    to_signed_unit,
)
from jaxml.diffusion.metrics.frechet import feature_statistics, frechet_distance
from jaxml.models.inception import (
    INCEPTION_FEATURES,  # noqa: F401 - re-exported
    INCEPTION_SIZE,
    InceptionV3,
    inception_param_shapes,
)

Array = Any
PathLike = str | os.PathLike
log = logging.getLogger(__name__)

INCEPTION_WEIGHTS_FILE = "pt_inception-2015-12-05.npz"
INCEPTION_PTH_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth"
)
INCEPTION_CONVERT_COMMAND = (
    "python -m jaxml.diffusion.fid convert --src=pt_inception-2015-12-05-6726825d.pth "
    f"--out={INCEPTION_WEIGHTS_FILE}"
)


class InceptionWeightsError(ValueError):
    """The Inception weights file exists but is not the expected set of arrays."""


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
    x = to_signed_unit(images)
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
        f"(inception-2015-12-05): {INCEPTION_PTH_URL} ; convert it to our .npz "
        f"(needs torch, once): {INCEPTION_CONVERT_COMMAND} ; then put "
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


def inception_torch_keys() -> list[str]:
    """The pytorch-fid state-dict keys that the pool3 network uses (470 of them)."""
    return [_torch_key(p) for p in inception_param_shapes()]


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

    The file: the .npz that `convert_inception_weights` (``python -m
    jaxml.diffusion.fid convert``) writes from pytorch-fid's
    `pt_inception-2015-12-05-6726825d.pth` (the TF FID graph's weights,
    ported; `INCEPTION_PTH_URL`): the state dict's arrays under their torch
    names and layouts. Unused entries (fc.*, num_batches_tracked) are ignored.
    Default path: `default_inception_weights_path()`. Missing file:
    FileNotFoundError saying where to put it; wrong contents:
    InceptionWeightsError naming the arrays.
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
    return params_from_state_dict(arrays, str(path))


def params_from_state_dict(arrays: Mapping[str, Array], source: str = "state dict") -> dict:
    """InceptionV3 params from a pytorch-fid state dict ({torch name: array}, OIHW kernels).

    Extra entries are ignored; missing or misshapen ones raise InceptionWeightsError
    naming them (`source` names where the arrays came from).
    """
    flat, missing, wrong = {}, [], []
    for key_path, spec in inception_param_shapes().items():
        key = _torch_key(key_path)
        if key not in arrays:
            missing.append(key)
            continue
        value = np.asarray(arrays[key])
        if key_path[-1] == "kernel":
            value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value  # OIHW -> HWIO
        if value.shape != spec.shape:
            want = spec.shape
            if key_path[-1] == "kernel":
                want = (want[3], want[2], want[0], want[1])  # as the file stores it: OIHW
            wrong.append(f"{key} is {np.shape(arrays[key])}, want {want}")
            continue
        flat[key_path] = np.asarray(value, np.float32)
    if missing or wrong:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if wrong:
            details.append(f"{len(wrong)} with the wrong shape (e.g. {', '.join(wrong[:3])})")
        found = ", ".join(list(arrays)[:3])
        raise InceptionWeightsError(
            f"{source} is not the pytorch-fid Inception state dict: {'; '.join(details)} "
            f"(its first keys: {found}). Expected {INCEPTION_PTH_URL} or its conversion made "
            f"with: {INCEPTION_CONVERT_COMMAND}"
        )
    return flax.traverse_util.unflatten_dict(flat)


def _read_torch_state_dict(src: Path) -> Mapping[str, np.ndarray]:
    """{name: array} from a torch file: a state dict (.pth) or a pickled nn.Module (.pkl)."""
    try:
        import torch
    except ImportError:
        raise InceptionWeightsError(
            f"reading {src} needs torch (pip install torch, once, on any machine); "
            "the .npz it converts to does not"
        ) from None
    try:
        if src.suffix == ".pkl":
            import pickle

            with open(src, "rb") as f:
                obj = pickle.load(f)
        else:
            obj = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - name the file whatever torch choked on
        raise InceptionWeightsError(
            f"cannot read {src} with torch ({type(e).__name__}: {e})"
        ) from None
    if hasattr(obj, "state_dict"):
        obj = obj.state_dict()
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise InceptionWeightsError(f"{src} holds a {type(obj).__name__}, not a state dict")
    return {k: v.detach().cpu().numpy() for k, v in obj.items() if hasattr(v, "detach")}


def convert_inception_weights(src: PathLike, out: PathLike) -> dict:
    """pytorch-fid weights (.pth state dict, a pickled module, or an .npz of one) -> our .npz.

    Checks every array the pool3 network needs (names, shapes) before writing,
    and writes only those, float32, under their torch names. Returns
    {"arrays": count, "ignored": [names not used]}.
    """
    src, out = Path(src), Path(out)
    if not src.is_file():
        raise FileNotFoundError(f"Inception weights to convert not found at {src}")
    if src.suffix == ".npz":
        with np.load(src, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    else:
        arrays = _read_torch_state_dict(src)
    params = params_from_state_dict(arrays, str(src))
    save_inception_params(params, out)
    used = set(inception_torch_keys())
    return {"arrays": len(used), "ignored": sorted(k for k in arrays if k not in used)}


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


def load_reference_stats(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) from an .npz with arrays "mu" and "sigma" (ours, pytorch-fid's, TTUR's)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"FID reference statistics not found at {path}; "
            "make them with: python -m jaxml.diffusion.fid stats --dataset=... --out=..."
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
    quantize: bool = True,
    progress: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of Inception pool3 features over `images`; also saved to out_path (.npz).

    features_fn replaces the Inception extractor (e.g. an extractor built once
    and reused); otherwise it is built from params or weights_path. quantize:
    float images go through `quantize_uint8` first, as EDM saves its samples
    (the FID protocol); uint8 images are used as they are. progress: a name to
    log progress lines under (rate, ETA), None for silence.
    """
    if features_fn is None:
        features_fn = inception_feature_extractor(weights_path, params=params)
    if quantize:
        images = quantize_uint8(images)
    features = features_in_batches(features_fn, images, batch_size, progress=progress)
    mu, sigma = feature_statistics(features)
    if out_path is not None:
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with open(out_path, "wb") as f:
            np.savez(f, mu=mu, sigma=sigma, num_images=len(features))
    return mu, sigma


def fid(
    images: Array,
    reference_stats: PathLike | tuple[Array, Array] | Mapping,
    *,
    weights_path: PathLike | None = None,
    params: Mapping | None = None,
    features_fn: FeaturesFn | None = None,
    batch_size: int = 50,
    quantize: bool = True,
) -> float:
    """FID of `images` against reference statistics (an .npz path, (mu, sigma), or a mapping).

    The standard protocol (EDM): 50,000 generated images quantised to uint8
    (quantize=True), against the statistics of the training set; fewer images
    give a higher (biased) number.
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
        quantize=quantize,
    )
    return frechet_distance(mu, sigma, mu_ref, sigma_ref)
