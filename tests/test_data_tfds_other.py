"""A non-embedded TFDS dataset, prepared by the user in data_dir, loads through the same path."""

import numpy as np
import tensorflow_datasets as tfds
from toy_tfds import toy_user_dataset  # noqa: F401  (registers the builder)

from jaxml import data


def test_prepared_user_dataset_goes_through_grain(tmp_path):
    builder = tfds.builder("toy_user_dataset", data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare()
    source = data.data_source("toy_user_dataset", "train", str(tmp_path))
    assert len(source) == 20
    it = data.train_iterator(
        source, global_batch_size=4, seed=0, num_epochs=1, process_index=0, process_count=1
    )
    values = np.concatenate([b["value"] for b in it])
    np.testing.assert_array_equal(np.sort(values), np.arange(20) * 3)
