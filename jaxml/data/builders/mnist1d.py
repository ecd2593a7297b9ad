"""MNIST-1D (Greydanus 2020) regenerated locally by its own generator.

`mnist1d.data.make_dataset(get_dataset_args())` reproduces the published frozen
file bit for bit (seed 42); we never call `get_dataset`, which downloads.
"""

import numpy as np
import tensorflow_datasets as tfds

SEQUENCE_LENGTH = 40
NUM_CLASSES = 10


def generate_mnist1d() -> dict:
    """The canonical MNIST-1D arrays: x (4000, 40), y (4000,), x_test, y_test, t."""
    from mnist1d.data import get_dataset_args, make_dataset  # imports matplotlib: keep lazy

    return make_dataset(get_dataset_args())


class Mnist1d(tfds.core.GeneratorBasedBuilder):
    """MNIST-1D: 4000 train / 1000 test sequences of length 40, 10 classes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Canonical MNIST-1D (make_dataset(get_dataset_args()), seed 42)."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "sequence": tfds.features.Tensor(shape=(SEQUENCE_LENGTH,), dtype=np.float32),
                    "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                }
            ),
            supervised_keys=("sequence", "label"),
            # Keep the generator's order, so record i is example i of the canonical file.
            disable_shuffling=True,
            homepage="https://github.com/greydanus/mnist1d",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        data = generate_mnist1d()
        return {
            "train": self._generate_examples(data["x"], data["y"]),
            "test": self._generate_examples(data["x_test"], data["y_test"]),
        }

    def _generate_examples(self, x, y):
        for i, (sequence, label) in enumerate(zip(x, y)):
            yield i, {"sequence": sequence.astype(np.float32), "label": int(label)}
