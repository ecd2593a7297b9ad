"""LRA token tasks: ListOps, Text (IMDB, characters) and Retrieval (AAN, two documents).

As the official loaders (state-spaces `src/dataloaders/lra.py`): tokens are truncated to
l_max - 1 and an <eos> appended; the vocabulary is built from the train split only,
specials first (<pad>=0, <unk>=1, <eos>=2), then tokens by decreasing count, ties in
sorted order (torchtext's build_vocab_from_iterator); unknown tokens map to <unk>.
Records store the ids zero-padded (<pad> = 0) to l_max as uint8 plus the true length
(including <eos>); the vocabulary is saved in the dataset's metadata ("vocab").

  listops  basic_{train,val,test}.tsv ("Source<TAB>Target", header line) from
           lra_release/listops-1000; tokens = Source with "]" -> "X", "(" ")" removed, split
           on spaces. l_max 2048, 10 classes, vocabulary 18 (S5 embeds with 20 rows).
           Splits 96000 / 2000 / 2000.
  imdb     TFDS imdb_reviews (plain_text) train / test, characters; vocabulary = characters
           seen >= 15 times in train + 3 specials = 135. l_max 4096, 2 classes, no
           validation split (LRA reports test). Splits 25000 / 25000.
  aan      new_aan_pairs.{train,eval,test}.tsv from lra_release/tsv_data, no header,
           columns label, id1, id2, text1, text2; characters, l_max 4000 per document,
           vocabulary from both train documents (98). Splits 147086 / 18090 / 17437.
           The texts are Python bytes literals (b'...', printable ASCII) and stay so: the
           official loaders do not decode them either. No quote handling (LRA reads with
           use_quote_delim=False; S5's pandas reader only quotes a field that starts with
           '"', which b'...' never does).

Deliberate differences from the original LRA pipelines (google-research/long-range-arena):
ListOps there is cut at 2000 tokens without <eos>, Text is UTF-8 bytes (ByteTextEncoder)
cut at 1000-4000; we follow the S5 paper's loaders (state-spaces, above).
"""

import collections
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from tqdm import tqdm

from jaxml.data.builders.task_inputs import (
    MissingInputError,
    find_lra_path,
    pad_tokens,
    record_features,
)
from jaxml.data.sequence_tasks import TASK_SPECS

SPECIALS = ("<pad>", "<unk>", "<eos>")
UNK, EOS = 1, 2


def build_vocab(counts: collections.Counter, min_freq: int = 1) -> list[str]:
    """Specials, then tokens by decreasing count (ties in sorted order), count >= min_freq."""
    ordered = sorted(counts.items(), key=lambda kv: kv[0])
    ordered.sort(key=lambda kv: kv[1], reverse=True)
    return list(SPECIALS) + [t for t, c in ordered if c >= min_freq and t not in SPECIALS]


def encode(tokens, index: dict, l_max: int) -> np.ndarray:
    """First l_max - 1 tokens as ids (unknown -> <unk>) followed by <eos>."""
    ids = [index.get(t, UNK) for t in tokens[: l_max - 1]]
    return np.asarray(ids + [EOS], np.int64)


class CharEncoder:
    """`encode` for character vocabularies: a lookup table over a document's code points."""

    def __init__(self, index: dict):
        chars = {ord(c): i for c, i in index.items() if len(c) == 1}
        # One slot past the largest code point in the vocabulary holds <unk> for the rest.
        self._table = np.full(max(chars, default=0) + 2, UNK, np.int64)
        self._table[list(chars)] = list(chars.values())

    def __call__(self, text: str, l_max: int) -> np.ndarray:
        codes = np.frombuffer(text[: l_max - 1].encode("utf-32-le"), "<u4")
        ids = self._table[np.minimum(codes, len(self._table) - 1)]
        return np.append(ids, EOS)


def listops_tokens(source: str) -> list[str]:
    """The LRA tokenizer: "]" becomes "X", parentheses go, split on whitespace."""
    return source.translate({ord("]"): ord("X"), ord("("): None, ord(")"): None}).split()


def read_tsv(path: Path):
    """Rows of a tab-separated file, fields split on tabs (no quoting)."""
    with open(path, encoding="utf8") as f:
        for line in f:
            line = line.rstrip("\r\n")
            if line:
                yield line.split("\t")


class _TokenBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")
    L_MAX = 2048
    MIN_FREQ = 1

    def __init__(self, *, input_dir=None, **kwargs):
        super().__init__(**kwargs)
        self._input_dir = input_dir  # release files, or the data_dir of the TFDS source

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=record_features(self.name),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
            homepage="https://github.com/google-research/long-range-arena",
        )

    def _vocab_index(self, train_token_lists) -> dict:
        counts = collections.Counter()
        for tokens in tqdm(train_token_lists, desc=f"{self.name}: vocabulary", unit="text"):
            counts.update(tokens[: self.L_MAX - 1])
        vocab = build_vocab(counts, self.MIN_FREQ)
        limit = TASK_SPECS[self.name]["vocab_size"]
        if len(vocab) > limit:
            raise ValueError(
                f"{self.name}: the train split gives {len(vocab)} tokens, more than the "
                f"official {limit}; the input files are not the official release"
            )
        self.info.metadata["vocab"] = vocab
        return {t: i for i, t in enumerate(vocab)}


class Listops(_TokenBuilder):
    """LRA ListOps (see module docstring)."""

    name = "listops"
    L_MAX = 2048
    FILES = {"train": "basic_train.tsv", "validation": "basic_val.tsv", "test": "basic_test.tsv"}

    @classmethod
    def _paths(cls, manual_dir):
        return {s: find_lra_path(manual_dir, f"listops-1000/{f}") for s, f in cls.FILES.items()}

    @classmethod
    def check_inputs(cls, manual_dir, data_dir):
        del data_dir
        cls._paths(manual_dir)

    def _rows(self, path):
        rows = read_tsv(path)
        header = next(rows, None)
        if header is None or header[:2] != ["Source", "Target"]:
            raise ValueError(f"{path}: expected the header 'Source<TAB>Target', got {header}")
        for source, target in rows:
            yield listops_tokens(source), int(target)

    def _split_generators(self, dl_manager):
        paths = self._paths(self._input_dir)
        index = self._vocab_index(tokens for tokens, _ in self._rows(paths["train"]))
        return {s: self._generate_examples(p, index) for s, p in paths.items()}

    def _generate_examples(self, path, index):
        for i, (tokens, label) in enumerate(self._rows(path)):
            ids = encode(tokens, index, self.L_MAX)
            yield i, {"tokens": pad_tokens(ids, self.L_MAX), "length": len(ids), "label": label}


class Imdb(_TokenBuilder):
    """LRA Text: IMDB reviews as characters (see module docstring)."""

    name = "imdb"
    L_MAX = 4096
    MIN_FREQ = 15
    SOURCE = "imdb_reviews"

    @classmethod
    def check_inputs(cls, manual_dir, data_dir):
        from jaxml.data import sources

        source_dir = manual_dir or data_dir
        for split in ("train", "test"):
            try:
                sources.data_source(cls.SOURCE, split, source_dir)
            except sources.DatasetUnavailableError as e:
                raise MissingInputError(
                    f"imdb is made from the TFDS dataset 'imdb_reviews' (plain_text), which "
                    f"is not ready in {source_dir}: {e}"
                ) from None

    def _texts(self, source):
        for i in range(len(source)):
            record = source[i]
            text = record["text"]
            yield (text.decode("utf-8") if isinstance(text, bytes) else str(text)), record

    def _split_generators(self, dl_manager):
        del dl_manager
        from jaxml.data import sources

        train = sources.data_source(self.SOURCE, "train", self._input_dir)
        test = sources.data_source(self.SOURCE, "test", self._input_dir)
        encoder = CharEncoder(self._vocab_index(text for text, _ in self._texts(train)))
        return {
            "train": self._generate_examples(train, encoder),
            "test": self._generate_examples(test, encoder),
        }

    def _generate_examples(self, source, encoder):
        for i, (text, record) in enumerate(self._texts(source)):
            ids = encoder(text, self.L_MAX)
            yield (
                i,
                {
                    "tokens": pad_tokens(ids, self.L_MAX),
                    "length": len(ids),
                    "label": int(record["label"]),
                },
            )


class Aan(_TokenBuilder):
    """LRA Retrieval: pairs of AAN papers as characters (see module docstring)."""

    name = "aan"
    L_MAX = 4000
    FILES = {
        "train": "new_aan_pairs.train.tsv",
        "validation": "new_aan_pairs.eval.tsv",
        "test": "new_aan_pairs.test.tsv",
    }

    @classmethod
    def _paths(cls, manual_dir):
        return {s: find_lra_path(manual_dir, f"tsv_data/{f}") for s, f in cls.FILES.items()}

    @classmethod
    def check_inputs(cls, manual_dir, data_dir):
        del data_dir
        cls._paths(manual_dir)

    def _rows(self, path):
        for n, fields in enumerate(read_tsv(path)):
            if len(fields) != 5:
                raise ValueError(
                    f"{path} line {n + 1}: expected 5 tab-separated columns "
                    f"(label, id1, id2, text1, text2), got {len(fields)}"
                )
            yield int(float(fields[0])), fields[3], fields[4]

    def _split_generators(self, dl_manager):
        paths = self._paths(self._input_dir)

        def train_documents():
            for _, text1, text2 in self._rows(paths["train"]):
                yield text1
                yield text2

        encoder = CharEncoder(self._vocab_index(train_documents()))
        return {s: self._generate_examples(p, encoder) for s, p in paths.items()}

    def _generate_examples(self, path, encoder):
        for i, (label, text1, text2) in enumerate(self._rows(path)):
            ids = [encoder(text, self.L_MAX) for text in (text1, text2)]
            yield (
                i,
                {
                    "tokens": np.stack([pad_tokens(x, self.L_MAX) for x in ids]),
                    "length": np.asarray([len(x) for x in ids], np.int32),
                    "label": label,
                },
            )
