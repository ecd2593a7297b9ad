"""LRA token builders on fake files in the official formats; expected ids derived by hand.

Reference: state-spaces src/dataloaders/lra.py (ListOps, IMDB, AAN): tokens truncated to
l_max - 1 then <eos>; vocabulary from train, <pad>=0 <unk>=1 <eos>=2 first, then by
decreasing count with ties in sorted order; IMDB keeps characters seen >= 15 times.
"""

import json

import numpy as np
import pytest
from paper_task_fakes import write_fake_imdb_reviews, write_tsv

from jaxml import data
from jaxml.data import preprocess, sources
from jaxml.data.sequence_tasks import RECORD_FIELDS, TASK_SPECS


def _records(name, split, data_dir):
    source = data.data_source(name, split, str(data_dir))
    return [source[i] for i in range(len(source))]


def _check_format(name, record):
    for field, (shape, dtype) in RECORD_FIELDS[name].items():
        value = np.asarray(record[field])
        assert value.dtype == dtype, (field, value.dtype)
        assert value.shape == shape, (field, value.shape)


@pytest.fixture(scope="module")
def listops_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("lra") / "lra_release" / "listops-1000"
    header = ["Source", "Target"]
    long_row = "( [SM " + "1 " * 3000 + "] )"
    write_tsv(
        root / "basic_train.tsv",
        [("( [MAX 2 9 ] )", 9), ("( ( [MIN 2 ( [MAX 3 4 ] ) ] ) )", 2), (long_row, 1)],
        header,
    )
    write_tsv(root / "basic_val.tsv", [("[MAX 4 3 ]", 4)], header)
    write_tsv(root / "basic_test.tsv", [("[SM 7 ]", 7), ("[MED 2 ]", 2)], header)
    return root.parent


def test_listops_tokens_vocab_lengths_splits(listops_dir, tmp_path):
    sources.prepare_dataset(
        "listops", str(tmp_path), allow_download=True, manual_dir=str(listops_dir)
    )
    train = _records("listops", "train", tmp_path)
    val = _records("listops", "validation", tmp_path)
    test = _records("listops", "test", tmp_path)
    assert (len(train), len(val), len(test)) == (3, 1, 2)
    for r in train + val + test:
        _check_format("listops", r)
    # Counts in train (after "]" -> "X", parentheses dropped): 1 x3000, X x4, [MAX x2,
    # 2 x2, then once each: 3, 4, 9, [MIN, [SM. Vocabulary (ties in sorted order):
    vocab = ["<pad>", "<unk>", "<eos>", "1", "X", "2", "[MAX", "3", "4", "9", "[MIN", "[SM"]
    meta = json.loads((tmp_path / "listops/1.0.0/metadata.json").read_text())
    assert meta["vocab"] == vocab
    ids = {t: i for i, t in enumerate(vocab)}
    first = [ids["[MAX"], ids["2"], ids["9"], ids["X"], 2]
    np.testing.assert_array_equal(train[0]["tokens"][:5], first)
    assert train[0]["length"] == 5 and not train[0]["tokens"][5:].any()
    assert train[1]["length"] == 8  # [MIN 2 [MAX 3 4 X X <eos>
    # 3003 tokens truncated to 2047 + <eos>: exactly the padded length.
    assert train[2]["length"] == 2048 and train[2]["tokens"][-1] == 2
    assert train[2]["tokens"][0] == ids["[SM"] and (train[2]["tokens"][1:-1] == ids["1"]).all()
    # [MED was never seen in train: <unk>.
    np.testing.assert_array_equal(test[1]["tokens"][:3], [1, ids["2"], ids["X"]])
    assert [r["label"] for r in train] == [9, 2, 1] and test[0]["label"] == 7
    assert len(vocab) <= TASK_SPECS["listops"]["vocab_size"]


def test_listops_rejects_a_file_without_the_official_header(tmp_path):
    root = tmp_path / "listops-1000"
    for split in ("train", "val", "test"):
        write_tsv(root / f"basic_{split}.tsv", [("[MAX 2 ]", 2)])
    with pytest.raises(ValueError, match="Source<TAB>Target"):
        sources.prepare_dataset(
            "listops", str(tmp_path / "out"), allow_download=True, manual_dir=str(tmp_path)
        )


def test_aan_pairs_two_documents_and_pads_each(tmp_path):
    root = tmp_path / "tsv_data"
    long_doc = "b" * 3000 + "a" * 3000  # truncated to 3999: 3000 b, 999 a
    write_tsv(
        root / "new_aan_pairs.train.tsv",
        [("1", "p1", "p2", "aab", "ba"), ("0.0", "p3", "p4", long_doc, "c")],
    )
    write_tsv(root / "new_aan_pairs.eval.tsv", [("0", "p5", "p6", "cz", "a")])
    write_tsv(root / "new_aan_pairs.test.tsv", [("1", "p7", "p8", "b", "abc")])
    sources.prepare_dataset(
        "aan", str(tmp_path / "out"), allow_download=True, manual_dir=str(tmp_path)
    )
    train = _records("aan", "train", tmp_path / "out")
    val = _records("aan", "validation", tmp_path / "out")
    test = _records("aan", "test", tmp_path / "out")
    assert (len(train), len(val), len(test)) == (2, 1, 1)
    for r in train + val + test:
        _check_format("aan", r)
    # Counts over the truncated train documents: b = 3000 + 2, a = 999 + 3, c = 1 (over the
    # untruncated ones "a" would come first).
    b, a, c = 3, 4, 5
    np.testing.assert_array_equal(train[0]["tokens"][0, :4], [a, a, b, 2])
    np.testing.assert_array_equal(train[0]["tokens"][1, :3], [b, a, 2])
    np.testing.assert_array_equal(train[0]["length"], [4, 3])
    np.testing.assert_array_equal(train[1]["length"], [4000, 2])
    assert train[1]["tokens"][0, 3999] == 2 and train[1]["tokens"][0, 3998] == a
    assert (train[1]["tokens"][0, :3000] == b).all()
    np.testing.assert_array_equal(val[0]["tokens"][0, :3], [c, 1, 2])  # z unseen -> <unk>
    assert [r["label"] for r in train + val + test] == [1, 0, 0, 1]
    batch = preprocess.get("token_pair_sequence")(
        {k: np.stack([r[k] for r in train]) for k in train[0]}
    )
    assert batch["inputs"].shape == (2, 2, 4000) and batch["inputs"].dtype == np.int32
    assert batch["lengths"].shape == (2, 2) and batch["label"].dtype == np.int32


def test_imdb_characters_min_freq_15_from_tfds_imdb_reviews(tmp_path):
    # a x20, é x15, b x15, c x14 in train: c falls under min_freq 15 and becomes <unk>.
    train_text = "a" * 20 + "é" * 15 + "b" * 15 + "c" * 14
    write_fake_imdb_reviews(
        tmp_path, {"train": [(train_text, 1), ("", 0)], "test": [("bcaé" * 1500, 0)]}
    )
    sources.prepare_dataset("imdb", str(tmp_path), allow_download=True)
    train = _records("imdb", "train", tmp_path)
    test = _records("imdb", "test", tmp_path)
    assert (len(train), len(test)) == (2, 1)
    with pytest.raises(data.DatasetUnavailableError, match="no split 'validation'"):
        data.data_source("imdb", "validation", str(tmp_path))
    for r in train + test:
        _check_format("imdb", r)
    a, b, e_acute = 3, 4, 5  # a (20); then b and é tie at 15: "b" < "é"
    meta = json.loads((tmp_path / "imdb/1.0.0/metadata.json").read_text())
    assert meta["vocab"] == ["<pad>", "<unk>", "<eos>", "a", "b", "é"]
    assert train[0]["length"] == 65 and train[0]["tokens"][64] == 2
    np.testing.assert_array_equal(train[0]["tokens"][19:21], [a, e_acute])  # one token per é
    assert (train[0]["tokens"][50:64] == 1).all()  # c -> <unk>
    assert train[1]["length"] == 1 and train[1]["tokens"][0] == 2  # empty review: <eos> only
    # 6000 characters -> 4095 + <eos>.
    assert test[0]["length"] == 4096 and test[0]["tokens"][-1] == 2
    np.testing.assert_array_equal(test[0]["tokens"][:4], [b, 1, a, e_acute])


def test_char_encoder_equals_a_python_loop():
    from jaxml.data.builders.lra_text import CharEncoder

    vocab = ["<pad>", "<unk>", "<eos>", "e", "é", "a", " ", "\U0001f600"]
    text = "a é\U0001f600zé" * 700 + "\U0010ffff"
    encoder = CharEncoder({t: i for i, t in enumerate(vocab)})
    for l_max in (1, 2, 5, 4000, 6000):
        expected = [vocab.index(ch) if ch in vocab else 1 for ch in text[: l_max - 1]] + [2]
        np.testing.assert_array_equal(encoder(text, l_max), expected)


# The official one-hot widths (lindermanlab/S5 s5/dataloading.py, IN_DIM): ListOps 20
# (state-spaces configs/dataset/listops.yaml: "max_vocab: 20 # Actual size 18"), IMDB 135
# (hard-coded; state-spaces imdb.yaml "min_freq=15: vocab ~ 135"), AAN len(vocab) = 98
# (state-spaces aan.yaml "Full size 98"). Lengths: l_max 2048 / 4096 / 4000 (lra.py).
OFFICIAL = {"listops": (20, 2048), "imdb": (135, 4096), "aan": (98, 4000)}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_paper_configs_one_hot_width_and_length_are_the_official_ones(name):
    import importlib

    from jaxml.tasks import classification_config

    config = importlib.import_module(f"train.configs.s5_{name}").get_config()
    assert config.model.input_encoding == "one_hot"
    assert classification_config.vocab_size(config) == OFFICIAL[name][0]
    assert TASK_SPECS[name]["seq_len"] == OFFICIAL[name][1]


def test_listops_full_symbol_set_is_18_tokens(tmp_path):
    # All 15 LRA ListOps symbols (digits, the four operators, "]") -> 3 specials + 15.
    source = "( [MAX 0 1 2 3 4 ( [MIN 5 6 ] ) ( [MED 7 8 ] ) ( [SM 9 ] ) ] )"
    root = tmp_path / "listops-1000"
    for split in ("train", "val", "test"):
        write_tsv(root / f"basic_{split}.tsv", [(source, 3)], ["Source", "Target"])
    sources.prepare_dataset(
        "listops", str(tmp_path / "out"), allow_download=True, manual_dir=str(tmp_path)
    )
    vocab = json.loads((tmp_path / "out/listops/1.0.0/metadata.json").read_text())["vocab"]
    assert len(vocab) == 18 < TASK_SPECS["listops"]["vocab_size"]


def test_aan_printable_ascii_vocabulary_is_the_official_98(tmp_path):
    # The release's texts are Python bytes literals (b'...'): printable ASCII only, kept as
    # text (neither S5 nor the LRA pipeline decodes them). All 95 -> 3 specials + 95 = 98.
    printable = "".join(chr(c) for c in range(32, 127))
    root = tmp_path / "tsv_data"
    row = ("1", "id1", "id2", f"b'{printable}'", "b'x'")
    for split in ("train", "eval", "test"):
        write_tsv(root / f"new_aan_pairs.{split}.tsv", [row])
    sources.prepare_dataset(
        "aan", str(tmp_path / "out"), allow_download=True, manual_dir=str(tmp_path)
    )
    vocab = json.loads((tmp_path / "out/aan/1.0.0/metadata.json").read_text())["vocab"]
    assert len(vocab) == TASK_SPECS["aan"]["vocab_size"] == 98
    assert _records("aan", "test", tmp_path / "out")[0]["tokens"].max() < 98
    # One more character than the official release can hold is not the official release.
    write_tsv(root / "new_aan_pairs.train.tsv", [row[:4] + ("b'\u00e9'",)])
    with pytest.raises(ValueError, match="more than the official 98"):
        sources.prepare_dataset(
            "aan", str(tmp_path / "out2"), allow_download=True, manual_dir=str(tmp_path)
        )
