"""What the paper-task builders share: input checks, record features, fixed validation cuts."""

from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from jaxml.data.sequence_tasks import RECORD_FIELDS, TASK_SPECS

LRA_URL = "https://storage.googleapis.com/long-range-arena/lra_release.gz"
SPEECH_URL = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
VALIDATION_FRACTION = 0.1
SPLIT_SEED = 42  # the official loaders' seed for their validation / test cuts


class MissingInputError(FileNotFoundError):
    """An input file or prepared source dataset that a builder reads is not there."""


def record_features(name: str) -> tfds.features.FeaturesDict:
    """The TFDS features of RECORD_FIELDS[name]; the label is a ClassLabel."""
    features = {}
    for field, (shape, dtype) in RECORD_FIELDS[name].items():
        if field == "label":
            features[field] = tfds.features.ClassLabel(num_classes=TASK_SPECS[name]["num_classes"])
        else:
            features[field] = tfds.features.Tensor(shape=shape, dtype=dtype)
    return tfds.features.FeaturesDict(features)


def find_lra_path(manual_dir, relative: str) -> Path:
    """`relative` inside the extracted LRA release given as manual_dir (or its parent)."""
    if manual_dir is None:
        raise MissingInputError(
            f"this dataset is read from the LRA release: download {LRA_URL}, extract it "
            "(tar -xzf lra_release.gz) and pass --manual_dir=<path of lra_release>"
        )
    manual_dir = Path(manual_dir).expanduser()
    for root in (manual_dir, manual_dir / "lra_release", manual_dir / "lra_release/lra_release"):
        if (root / relative).exists():
            return root / relative
    raise MissingInputError(
        f"{manual_dir / relative} not found; it is in the LRA release {LRA_URL} "
        "(extract it and pass --manual_dir=<path of lra_release>)"
    )


def validation_cut(n: int, *, fraction: float = VALIDATION_FRACTION, seed: int = SPLIT_SEED):
    """(train_indices, validation_indices): a fixed random `fraction` of n held out.

    As the official `split_train_val`: train gets int(n * (1 - fraction)) records. The
    official code draws the permutation with torch's generator (seed 42); we draw it with
    numpy's RandomState(42), so the proportions match but not the exact records.
    """
    train_len = int(n * (1.0 - fraction))
    order = np.random.RandomState(seed).permutation(n)
    return np.sort(order[:train_len]), np.sort(order[train_len:])


def three_way_cut(n: int, *, fraction: float = VALIDATION_FRACTION, seed: int = SPLIT_SEED):
    """Pathfinder's (train, validation, test) indices: int(fraction*n) each for val and test."""
    val_len = test_len = int(fraction * n)
    order = np.random.RandomState(seed).permutation(n)
    train_len = n - val_len - test_len
    return order[:train_len], order[train_len : train_len + val_len], order[train_len + val_len :]


def pad_tokens(ids, length: int) -> np.ndarray:
    """ids -> uint8 (length,) with 0 (= <pad>) after them."""
    out = np.zeros((length,), np.uint8)
    out[: len(ids)] = ids
    return out
