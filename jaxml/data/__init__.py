"""Input data: TFDS builders for embedded datasets, grain pipelines with per-process shards."""

from jaxml.data.pipeline import eval_batches, local_batch_size, train_iterator
from jaxml.data.sources import (
    DatasetUnavailableError,
    data_source,
    default_data_dir,
    prepare_dataset,
)

__all__ = [
    "DatasetUnavailableError",
    "data_source",
    "default_data_dir",
    "eval_batches",
    "local_batch_size",
    "prepare_dataset",
    "train_iterator",
]
