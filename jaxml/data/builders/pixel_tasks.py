"""Images read pixel by pixel: sMNIST, psMNIST, sCIFAR and LRA Image, from TFDS mnist / cifar10.

The source datasets are the TFDS `mnist` and `cifar10` the user prepared (array_record)
with `python -m jaxml.data.prepare --dataset=mnist` (TFDS needs TensorFlow to encode
their PNGs, for that step only). They are read from `input_dir` (the data_dir,
or --manual_dir when given). Each builder keeps the source test split as `test` and
cuts a fixed 10 % `validation` from the source train split (the rest is `train`), as
the official loaders do (`split_train_val(0.1)`, seed 42 — see task_inputs.validation_cut).

Stored records (uint8 pixels, normalised in jaxml.data.sequence_tasks):
  smnist       sequence (784,)      raster order, 10 classes
  psmnist      sequence (784,)      raster order permuted by PSMNIST_PERMUTATION
  scifar       sequence (1024, 3)   raster order, RGB
  lra_cifar    sequence (1024,)     PIL grayscale (torchvision Grayscale), raster order
"""

import numpy as np
import tensorflow_datasets as tfds

from jaxml.data.builders.task_inputs import MissingInputError, record_features, validation_cut


def bit_reversal_permutation(n: int) -> np.ndarray:
    """Indices 0..2^m-1 (2^m >= n) in bit-reversed order, keeping those below n.

    psMNIST uses this fixed permutation of the 784 pixels: it is the one the official
    S5 / S4 loaders apply (`permutations.bitreversal_permutation(784)`), so the paper's
    psMNIST number was measured with it. New position k holds pixel perm[k].
    """
    bits = max(1, int(np.ceil(np.log2(n))))
    idx = np.arange(1 << bits)
    reversed_idx = np.zeros_like(idx)
    for b in range(bits):
        reversed_idx |= ((idx >> b) & 1) << (bits - 1 - b)
    return reversed_idx[reversed_idx < n]


PSMNIST_PERMUTATION = bit_reversal_permutation(784)


def pil_grayscale(rgb: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) -> uint8 (...): PIL's convert("L") (ITU-R 601-2 luma, fixed point)."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


class _PixelSequenceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Reads a TFDS image dataset and stores each image as a pixel sequence."""

    VERSION = tfds.core.Version("1.0.0")
    SOURCE = "mnist"

    def __init__(self, *, input_dir=None, **kwargs):
        super().__init__(**kwargs)
        self._input_dir = input_dir  # release files, or the data_dir of the TFDS source

    @classmethod
    def check_inputs(cls, manual_dir, data_dir):
        """Raises MissingInputError unless the source TFDS dataset is prepared."""
        from jaxml.data import sources

        source_dir = manual_dir or data_dir
        for split in ("train", "test"):
            try:
                sources.data_source(cls.SOURCE, split, source_dir)
            except sources.DatasetUnavailableError as e:
                raise MissingInputError(
                    f"{cls.name} is made from the TFDS dataset {cls.SOURCE!r}, which is not "
                    f"ready in {source_dir}: {e}"
                ) from None

    def to_sequence(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=record_features(self.name),
            disable_shuffling=True,
            homepage="https://github.com/lindermanlab/S5",
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        from jaxml.data import sources

        train = sources.data_source(self.SOURCE, "train", self._input_dir)
        test = sources.data_source(self.SOURCE, "test", self._input_dir)
        train_idx, val_idx = validation_cut(len(train))
        return {
            "train": self._generate_examples(train, train_idx),
            "validation": self._generate_examples(train, val_idx),
            "test": self._generate_examples(test, np.arange(len(test))),
        }

    def _generate_examples(self, source, indices):
        for i in indices:
            record = source[int(i)]
            yield (
                int(i),
                {
                    "sequence": self.to_sequence(np.asarray(record["image"], np.uint8)),
                    "label": int(record["label"]),
                },
            )


class Smnist(_PixelSequenceBuilder):
    """Sequential MNIST: 784 pixels in raster order, 54000 / 6000 / 10000."""

    name = "smnist"
    SOURCE = "mnist"

    def to_sequence(self, image):
        return image.reshape(784)


class Psmnist(_PixelSequenceBuilder):
    """Permuted sequential MNIST: pixels reordered by PSMNIST_PERMUTATION (bit reversal)."""

    name = "psmnist"
    SOURCE = "mnist"

    def to_sequence(self, image):
        return image.reshape(784)[PSMNIST_PERMUTATION]


class Scifar(_PixelSequenceBuilder):
    """Sequential CIFAR-10 in colour: (1024, 3) raster order, 45000 / 5000 / 10000."""

    name = "scifar"
    SOURCE = "cifar10"

    def to_sequence(self, image):
        return image.reshape(1024, 3)


class LraCifar(_PixelSequenceBuilder):
    """LRA Image: CIFAR-10 in PIL grayscale, 1024 pixels, 45000 / 5000 / 10000."""

    name = "lra_cifar"
    SOURCE = "cifar10"

    def to_sequence(self, image):
        return pil_grayscale(image).reshape(1024)
