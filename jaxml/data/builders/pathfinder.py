"""LRA Pathfinder (32 x 32) and Path-X (Pathfinder 128 x 128), hardest level only.

Read from the extracted LRA release (--manual_dir):
  pathfinder32/curv_contour_length_14/   (pathx: pathfinder128/curv_contour_length_14/)
    metadata/<k>.npy   text files despite the suffix, read in numeric order of k; one line
                       per image: "<image dir> <file name> <...> <label> ..." (fields 0, 1
                       and 3 are used, as the official loader does)
    imgs/<k>/sample_<j>.png
Images are read as PIL grayscale ("L") and stored as uint8 raster sequences (1024 or
16384 values; normalised to [-1, 1] in jaxml.data.sequence_tasks), label 0/1.
Splits as the official loader: int(0.1 n) validation, int(0.1 n) test, the rest train,
a fixed random permutation (seed 42; drawn with numpy, the official one with torch).
With the full release n = 200000: 160000 / 20000 / 20000.
"""

from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from jaxml.data.builders.task_inputs import (
    MissingInputError,
    find_lra_path,
    record_features,
    three_way_cut,
)

LEVEL = "curv_contour_length_14"


def read_metadata(level_dir: Path) -> list[tuple[str, int]]:
    """[(image path relative to level_dir, label)] in the official order."""
    files = sorted((level_dir / "metadata").glob("*.npy"), key=lambda p: int(p.stem))
    if not files:
        raise MissingInputError(f"no metadata/*.npy files in {level_dir}")
    samples = []
    for path in files:
        for line in path.read_text().splitlines():
            fields = line.split()
            if fields:
                samples.append((f"{fields[0]}/{fields[1]}", int(fields[3])))
    return samples


class _PathfinderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")
    RESOLUTION = 32

    def __init__(self, *, input_dir=None, **kwargs):
        super().__init__(**kwargs)
        self._input_dir = input_dir  # the extracted release files (--manual_dir)

    @classmethod
    def level_dir(cls, manual_dir) -> Path:
        level_dir = find_lra_path(manual_dir, f"pathfinder{cls.RESOLUTION}/{LEVEL}")
        if not (level_dir / "metadata").is_dir():
            raise MissingInputError(
                f"{level_dir / 'metadata'} not found (pathfinder's metadata folder, in the "
                "LRA release)"
            )
        return level_dir

    @classmethod
    def check_inputs(cls, manual_dir, data_dir):
        del data_dir
        read_metadata(cls.level_dir(manual_dir))

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=record_features(self.name),
            disable_shuffling=True,
            homepage="https://github.com/google-research/long-range-arena",
        )

    def _split_generators(self, dl_manager):
        level_dir = self.level_dir(self._input_dir)
        samples = read_metadata(level_dir)
        train, validation, test = three_way_cut(len(samples))
        return {
            name: self._generate_examples(level_dir, samples, indices)
            for name, indices in (("train", train), ("validation", validation), ("test", test))
        }

    def _generate_examples(self, level_dir, samples, indices):
        r = self.RESOLUTION
        for i in indices:
            relative, label = samples[int(i)]
            path = level_dir / relative
            if not path.is_file():
                raise MissingInputError(f"{path} (listed in {level_dir / 'metadata'}) is missing")
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("L"), np.uint8)
            if pixels.shape != (r, r):
                raise ValueError(f"{path}: image is {pixels.shape}, expected {(r, r)}")
            yield int(i), {"sequence": pixels.reshape(r * r), "label": label}


class Pathfinder32(_PathfinderBuilder):
    """LRA Pathfinder, 32 x 32 = 1024 pixels, 2 classes."""

    name = "pathfinder32"
    RESOLUTION = 32


class Pathx(_PathfinderBuilder):
    """LRA Path-X: Pathfinder 128 x 128 = 16384 pixels, 2 classes."""

    name = "pathx"
    RESOLUTION = 128
