"""Batch transforms from TFDS records to model inputs (numpy, run inside grain)."""

import numpy as np


def sequence_classification(batch):
    """{'sequence': (b, L) or (b, L, C)} -> {'inputs': (b, L, C) float32, 'label': (b,) int32}."""
    x = np.asarray(batch["sequence"], np.float32)
    if x.ndim == 2:
        x = x[..., None]
    return {"inputs": x, "label": np.asarray(batch["label"], np.int32)}


def image_classification_flat(batch):
    """Images read pixel by pixel: (b, H, W, C) uint8 -> {'inputs': (b, H*W, C) in [0, 1]}."""
    x = np.asarray(batch["image"], np.float32) / 255.0
    b, h, w, c = x.shape
    return {"inputs": x.reshape(b, h * w, c), "label": np.asarray(batch["label"], np.int32)}


def image_generation(batch):
    """(b, H, W, C) uint8 -> {'image': float32 in [-1, 1], 'label': int32} (the EDM convention)."""
    x = np.asarray(batch["image"], np.float32) / 127.5 - 1.0
    return {"image": x, "label": np.asarray(batch["label"], np.int32)}


PREPROCESSORS = {
    "sequence_classification": sequence_classification,
    "image_classification_flat": image_classification_flat,
    "image_generation": image_generation,
}


def get(name: str):
    if name not in PREPROCESSORS:
        raise ValueError(f"unknown preprocess {name!r}; choose one of {sorted(PREPROCESSORS)}")
    return PREPROCESSORS[name]
