"""Mock sources of the ten paper tasks and the preprocess contract the S5 model relies on."""

import numpy as np
import pytest

from jaxml import data
from jaxml.data import preprocess
from jaxml.data.sequence_tasks import RECORD_FIELDS, TASK_SPECS

NAMES = (
    "smnist", "psmnist", "scifar", "listops", "imdb", "aan", "lra_cifar", "pathfinder32",
    "pathx", "speech_commands35",
)  # fmt: skip

# Published numbers (LRA paper, Tay et al. 2021, and the S4 / S5 papers' data appendices):
# (sequence length, classes, train / validation / test sizes).
PUBLISHED = {
    "smnist": (784, 10, (54000, 6000, 10000)),
    "psmnist": (784, 10, (54000, 6000, 10000)),
    "scifar": (1024, 10, (45000, 5000, 10000)),
    "listops": (2048, 10, (96000, 2000, 2000)),
    "imdb": (4096, 2, (25000, None, 25000)),
    "aan": (4000, 2, (147086, 18090, 17437)),
    "lra_cifar": (1024, 10, (45000, 5000, 10000)),
    "pathfinder32": (1024, 2, (160000, 20000, 20000)),
    "pathx": (16384, 2, (160000, 20000, 20000)),
    "speech_commands35": (16000, 35, (84843, 9981, 11005)),
}


def test_task_specs_document_the_published_numbers():
    assert set(TASK_SPECS) == set(NAMES) == set(RECORD_FIELDS)
    for name, (seq_len, classes, (train, val, test)) in PUBLISHED.items():
        spec = TASK_SPECS[name]
        assert (spec["seq_len"], spec["num_classes"]) == (seq_len, classes), name
        sizes = spec["official_sizes"]
        assert (sizes["train"], sizes.get("validation"), sizes["test"]) == (train, val, test)
        assert spec["has_validation"] == (val is not None) == ("validation" in spec["splits"])
        assert spec["preprocess"] in preprocess.PREPROCESSORS


def _splits():
    return [(name, split) for name in NAMES for split in TASK_SPECS[name]["splits"]]


@pytest.mark.parametrize("name,split", _splits())
def test_mock_records_have_the_stored_format(name, split, tmp_path):
    missing_dir = tmp_path / "nothing_here"
    source = data.data_source(name, split, str(missing_dir), mock=True)
    assert not missing_dir.exists()
    spec = TASK_SPECS[name]
    assert len(source) == (64 if split == "train" else 32)
    again = data.data_source(name, split, None, mock=True)
    for i in (0, len(source) - 1):
        for field in source[i]:
            np.testing.assert_array_equal(source[i][field], again[i][field])
    labels = set()
    for i in range(len(source)):
        record = source[i]
        assert set(record) == set(RECORD_FIELDS[name])
        for field, (shape, dtype) in RECORD_FIELDS[name].items():
            value = np.asarray(record[field])
            assert value.dtype == dtype, (field, value.dtype)
            if shape == (None,):  # speech audio
                shape = (spec["seq_len"] // (2 if split == "test_8khz" else 1),)
            assert value.shape == shape, (field, value.shape)
        assert 0 <= record["label"] < spec["num_classes"]
        labels.add(int(record["label"]))
        if "tokens" in record:
            tokens = np.atleast_2d(record["tokens"])
            for row, n in zip(tokens, np.atleast_1d(record["length"])):
                assert 1 <= n <= spec["seq_len"] and row[n - 1] == 2  # <eos>
                assert (row[: n - 1] > 2).all() and not row[n:].any()
                assert row.max() < spec["vocab_size"]
    assert len(labels) > 1


@pytest.mark.parametrize("name", NAMES)
def test_preprocessed_batches_meet_the_contract(name):
    spec = TASK_SPECS[name]
    fn = preprocess.get(spec["preprocess"])
    train = data.data_source(name, "train", mock=True)
    it = data.train_iterator(
        train, global_batch_size=8, seed=0, preprocess=fn, process_index=0, process_count=1
    )
    batches = [next(it)]
    for split in spec["splits"][1:]:
        source = data.data_source(name, split, mock=True)
        batches.append(
            next(
                data.eval_batches(
                    source, global_batch_size=8, preprocess=fn, process_count=1, process_index=0
                )
            )
        )
    for split, batch in zip(spec["splits"], batches):
        length = spec["seq_len"] // (2 if split == "test_8khz" else 1)
        x, lengths = batch["inputs"], batch["lengths"]
        if spec["vocab_size"] is not None:
            assert x.dtype == np.int32
            assert x.shape == ((8, 2, length) if name == "aan" else (8, length))
            assert lengths.shape == ((8, 2) if name == "aan" else (8,))
            assert 0 <= x.min() and x.max() < spec["vocab_size"]
        else:
            assert x.dtype == np.float32 and x.shape == (8, length, spec["channels"])
            assert lengths.shape == (8,) and np.isfinite(x).all()
        assert lengths.dtype == np.int32 and (lengths >= 1).all() and (lengths <= length).all()
        assert batch["label"].dtype == np.int32 and batch["label"].shape == (8,)
        assert (0 <= batch["label"]).all() and (batch["label"] < spec["num_classes"]).all()


def test_mock_refuses_unknown_names_and_splits():
    with pytest.raises(data.DatasetUnavailableError, match="no split 'validation'"):
        data.data_source("imdb", "validation", mock=True)
    with pytest.raises(data.DatasetUnavailableError, match="no mock data for 'mnist'"):
        data.data_source("mnist", "train", mock=True)


def test_mock_of_an_embedded_dataset_is_the_dataset(tmp_path):
    real = data.data_source("digits", "test", str(tmp_path))
    mocked = data.data_source("digits", "test", str(tmp_path), mock=True)
    assert len(mocked) == len(real) == 360
    np.testing.assert_array_equal(mocked[3]["image"], real[3]["image"])


def test_unprepared_task_names_its_prepare_command(tmp_path):
    with pytest.raises(data.DatasetUnavailableError, match="--dataset=pathx .*--manual_dir="):
        data.data_source("pathx", "train", str(tmp_path))
