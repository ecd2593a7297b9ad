"""A stand-in for a user's own TFDS dataset (TFDS wants builders inside a package folder)."""

import numpy as np
import tensorflow_datasets as tfds


class ToyUserDataset(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {"value": tfds.features.Tensor(shape=(), dtype=np.int64)}
            )
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(20):
            yield i, {"value": 3 * i}
