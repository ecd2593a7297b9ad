"""grain input pipelines: seeded shuffle, per-process shards, global batches, resumable state.

All processes walk one global, shuffled stream of records. Global batch s is
stream positions [s*B, (s+1)*B); process p of P reads its rows
[s*B + p*b, s*B + (p+1)*b) with b = B/P. Stacked process by process (as
`jax.make_array_from_process_local_data` does) the local batches form exactly
the global batch a 1-process run sees, row for row, so results do not depend on
the number of hosts. The iterator state is a position in that stream, so
restoring it resumes exactly.
"""

from collections.abc import Callable, Iterator

import grain
import jax
import numpy as np

Batch = dict[str, np.ndarray]


def _process_index_and_count(process_index, process_count) -> tuple[int, int]:
    if process_index is None:
        process_index = jax.process_index()
    if process_count is None:
        process_count = jax.process_count()
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    return process_index, process_count


def local_batch_size(global_batch_size: int, process_count: int) -> int:
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise ValueError(
            f"global batch size {global_batch_size} must be a positive multiple of the "
            f"process count {process_count}"
        )
    return global_batch_size // process_count


def train_iterator(
    source,
    *,
    global_batch_size: int,
    seed: int,
    preprocess: Callable[[Batch], Batch] | None = None,
    shuffle: bool = True,
    num_epochs: int | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    read_threads: int = 2,
) -> grain.DatasetIterator:
    """An endless (or `num_epochs`-long) iterator of this process's share of each global batch.

    Each epoch is reshuffled with seed `seed + epoch`. The returned iterator has
    `get_state()` / `set_state()` and is saved by `grain.checkpoint.CheckpointHandler`.
    """
    process_index, process_count = _process_index_and_count(process_index, process_count)
    batch_size = local_batch_size(global_batch_size, process_count)
    stream = grain.MapDataset.source(source)
    if shuffle:
        stream = stream.shuffle(seed=seed)
    stream = stream.repeat(num_epochs)  # a repeated shuffle reseeds every epoch

    def global_position(k):  # k-th record of this process -> its position in the stream
        step, row = divmod(k, batch_size)
        return step * global_batch_size + process_index * batch_size + row

    num_local = len(stream) // global_batch_size * batch_size
    ds = grain.MapDataset.range(num_local).map(lambda k: stream[global_position(k)])
    ds = ds.batch(batch_size, drop_remainder=True)
    if preprocess is not None:
        ds = ds.map(preprocess)
    read_options = grain.ReadOptions(
        num_threads=read_threads, prefetch_buffer_size=2 * read_threads
    )
    return iter(ds.to_iter_dataset(read_options))


class _Padded:
    """`source` padded to `length` records; padding repeats record 0 with mask False."""

    def __init__(self, source, length: int):
        self._source, self._length = source, length

    def __len__(self):
        return self._length

    def __getitem__(self, index):
        valid = index < len(self._source)
        record = dict(self._source[index if valid else 0])
        record["mask"] = np.bool_(valid)
        return record


def eval_batches(
    source,
    *,
    global_batch_size: int,
    preprocess: Callable[[Batch], Batch] | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[Batch]:
    """One ordered pass over `source` in full global batches; `batch["mask"]` marks real records."""
    process_index, process_count = _process_index_and_count(process_index, process_count)
    batch_size = local_batch_size(global_batch_size, process_count)
    num_batches = -(-len(source) // global_batch_size)
    ds = grain.MapDataset.source(_Padded(source, num_batches * global_batch_size))
    ds = ds[process_index::process_count].batch(batch_size, drop_remainder=True)
    if preprocess is not None:
        ds = ds.map(lambda b: {**preprocess(b), "mask": b["mask"]})
    return iter(ds)
