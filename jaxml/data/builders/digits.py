"""scikit-learn's 8x8 handwritten digits (1797 images) as a TFDS dataset.

The original pixels are integers 0..16; they are stored as uint8 0..255
(round(v * 255 / 16)) so that every image pipeline can treat them like MNIST.
The train/test split is fixed: stratified, 20% test, random_state=0.
"""

import numpy as np
import tensorflow_datasets as tfds

IMAGE_SHAPE = (8, 8, 1)
NUM_CLASSES = 10
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def digits_split() -> dict:
    """{"train": (images uint8 (n, 8, 8, 1), labels), "test": (...)} in a fixed order."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    return {"train": (x_train, y_train), "test": (x_test, y_test)}


class Digits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn digits: 1437 train / 360 test 8x8x1 uint8 images, 10 classes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "sklearn.datasets.load_digits, stratified 80/20 split, seed 0."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        splits = digits_split()
        return {name: self._generate_examples(*arrays) for name, arrays in splits.items()}

    def _generate_examples(self, images, labels):
        for i, (image, label) in enumerate(zip(images, labels)):
            yield i, {"image": image, "label": int(label)}
