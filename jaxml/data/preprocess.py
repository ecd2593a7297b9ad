"""Batch transforms from TFDS records to model inputs (numpy, run inside grain)."""

import functools

import numpy as np

from jaxml.data import sequence_tasks


def _linear_resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) weights of linear interpolation with half-pixel centers."""
    position = (np.arange(size_out) + 0.5) * size_in / size_out - 0.5
    position = np.clip(position, 0, size_in - 1)
    lower = np.floor(position).astype(int)
    upper = np.minimum(lower + 1, size_in - 1)
    frac = position - lower
    weights = np.zeros((size_out, size_in))
    np.add.at(weights, (np.arange(size_out), lower), 1 - frac)
    np.add.at(weights, (np.arange(size_out), upper), frac)
    return weights


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """(b, H, W, C) -> (b, size, size, C), bilinear (matches jax.image.resize "linear")."""
    rows = _linear_resize_matrix(images.shape[1], size)
    cols = _linear_resize_matrix(images.shape[2], size)
    out = np.einsum("ih,bhwc,jw->bijc", rows, images.astype(np.float64), cols)
    return out.astype(np.float32)


def _images(batch, image_size):
    x = np.asarray(batch["image"], np.float32)
    if image_size is not None and x.shape[1:3] != (image_size, image_size):
        x = resize_bilinear(x, image_size)
    return x


def sequence_classification(batch, image_size=None):
    """{'sequence': (b, L) or (b, L, C)} -> {'inputs': (b, L, C) float32, 'label': (b,) int32}."""
    del image_size
    x = np.asarray(batch["sequence"], np.float32)
    if x.ndim == 2:
        x = x[..., None]
    return {"inputs": x, "label": np.asarray(batch["label"], np.int32)}


def image_classification_flat(batch, image_size=None):
    """Images read pixel by pixel (raster order): (b, H, W, C) uint8 -> (b, H*W, C) in [0, 1].

    With `image_size`, images are first resized (bilinear) to image_size x image_size.
    """
    x = _images(batch, image_size) / 255.0
    b, h, w, c = x.shape
    return {"inputs": x.reshape(b, h * w, c), "label": np.asarray(batch["label"], np.int32)}


def image_generation(batch, image_size=None):
    """(b, H, W, C) uint8 -> {'image': float32 in [-1, 1], 'label': int32} (the EDM convention)."""
    x = _images(batch, image_size) / 127.5 - 1.0
    return {"image": x, "label": np.asarray(batch["label"], np.int32)}


PREPROCESSORS = {
    "sequence_classification": sequence_classification,
    "image_classification_flat": image_classification_flat,
    "image_generation": image_generation,
    "pixel_sequence": sequence_tasks.pixel_sequence,
    "scifar_sequence": sequence_tasks.scifar_sequence,
    "lra_cifar_sequence": sequence_tasks.lra_cifar_sequence,
    "pathfinder_sequence": sequence_tasks.pathfinder_sequence,
    "token_sequence": sequence_tasks.token_sequence,
    "token_pair_sequence": sequence_tasks.token_pair_sequence,
    "speech_waveform": sequence_tasks.speech_waveform,
}


def get(name: str, image_size: int | None = None):
    """The named batch transform, with images resized to `image_size` when given."""
    if name not in PREPROCESSORS:
        raise ValueError(f"unknown preprocess {name!r}; choose one of {sorted(PREPROCESSORS)}")
    return functools.partial(PREPROCESSORS[name], image_size=image_size)
