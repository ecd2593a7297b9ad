"""Mock sources for the paper tasks: records of the stored format, generated here, seeded.

`mock_source(name, split)` needs no files and no preparation: it has the fields,
shapes, dtypes, vocabulary and label range of the real records (RECORD_FIELDS,
TASK_SPECS), 64 records in train and 32 in every other split, and the same records on
every call. Token records end in <eos> (id 2) at their length and are <pad> (0) after it.
"""

import zlib

import numpy as np

from jaxml.data.sequence_tasks import RECORD_FIELDS, TASK_SPECS

TRAIN_SIZE = 64
EVAL_SIZE = 32
EOS = 2


class MockSource:
    """A random-access list of records (len, __getitem__), like a TFDS data source."""

    def __init__(self, name: str, split: str):
        spec = TASK_SPECS[name]
        if split not in spec["splits"]:
            raise ValueError(f"mock {name!r} has no split {split!r}; it has {spec['splits']}")
        self.name, self.split = name, split
        size = TRAIN_SIZE if split == "train" else EVAL_SIZE
        rng = np.random.default_rng(zlib.crc32(f"{name}/{split}".encode()))
        self._records = [_record(name, split, rng) for _ in range(size)]

    def __len__(self):
        return len(self._records)

    def __getitem__(self, index):
        return self._records[index]

    def __repr__(self):
        return f"MockSource({self.name!r}, {self.split!r}, {len(self)} records)"


def _tokens(rng, vocab_size, seq_len):
    length = int(rng.integers(1, seq_len + 1))
    tokens = np.zeros((seq_len,), np.uint8)
    tokens[: length - 1] = rng.integers(EOS + 1, vocab_size, size=length - 1)
    tokens[length - 1] = EOS
    return tokens, length


def _record(name, split, rng):
    spec = TASK_SPECS[name]
    fields = RECORD_FIELDS[name]
    label = np.int64(rng.integers(0, spec["num_classes"]))
    if "tokens" in fields:
        shape = fields["tokens"][0]
        if len(shape) == 2:  # aan: two documents
            pairs = [_tokens(rng, spec["vocab_size"], shape[1]) for _ in range(shape[0])]
            tokens = np.stack([t for t, _ in pairs])
            length = np.asarray([n for _, n in pairs], np.int32)
        else:
            tokens, n = _tokens(rng, spec["vocab_size"], shape[0])
            length = np.int64(n)
        return {"tokens": tokens, "length": length, "label": label}
    if "audio" in fields:
        clip = spec["seq_len"] // (2 if split == "test_8khz" else 1)
        length = int(rng.integers(clip // 2, clip + 1))
        audio = rng.standard_normal(clip).astype(np.float32)
        return {"audio": audio, "length": np.int64(length), "label": label}
    shape, dtype = fields["sequence"]
    sequence = rng.integers(0, 256, size=shape).astype(dtype)
    return {"sequence": sequence, "label": label}


def mock_source(name: str, split: str) -> MockSource:
    if name not in TASK_SPECS:
        raise ValueError(f"no mock data for {name!r}; mock tasks: {sorted(TASK_SPECS)}")
    return MockSource(name, split)
