"""Embedded datasets and grain pipelines: content, determinism, process shards."""

import numpy as np
import pytest

from jaxml import data
from jaxml.data import preprocess
from jaxml.data.builders.digits import digits_split


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def test_mnist1d_equals_the_generator(data_dir):
    from mnist1d.data import get_dataset_args, make_dataset

    reference = make_dataset(get_dataset_args())  # independent call of the canonical generator
    train = data.data_source("mnist1d", "train", data_dir)
    test = data.data_source("mnist1d", "test", data_dir)
    assert (len(train), len(test)) == (4000, 1000)
    for source, x, y in (
        (train, reference["x"], reference["y"]),
        (test, reference["x_test"], reference["y_test"]),
    ):
        assert source[0]["sequence"].shape == (40,)
        for i in (0, 1, len(source) // 2, len(source) - 1):
            np.testing.assert_allclose(source[i]["sequence"], x[i], rtol=1e-6, atol=1e-6)
        labels = np.array([source[i]["label"] for i in range(len(source))])
        np.testing.assert_array_equal(labels, y)


def test_digits_split_is_fixed_and_complete(data_dir):
    from sklearn.datasets import load_digits

    train = data.data_source("digits", "train", data_dir)
    test = data.data_source("digits", "test", data_dir)
    assert len(train) + len(test) == 1797
    assert train[0]["image"].shape == (8, 8, 1) and train[0]["image"].dtype == np.uint8
    # Every stored image is an original digit, rescaled 0..16 -> 0..255.
    originals = {
        tuple(np.round(img * 255 / 16).astype(np.uint8).ravel()) for img in load_digits().images
    }
    stored = [tuple(s[i]["image"].ravel()) for s in (train, test) for i in range(len(s))]
    assert set(stored) <= originals
    x_train, _ = digits_split()["train"]
    np.testing.assert_array_equal(train[5]["image"], x_train[5])
    counts = np.bincount([test[i]["label"] for i in range(len(test))], minlength=10)
    assert counts.min() >= 35  # stratified


def _first_batches(source, n, **kwargs):
    it = data.train_iterator(source, **kwargs)
    return [next(it) for _ in range(n)]


def test_same_seed_same_batches_other_seed_other_batches(data_dir):
    source = data.data_source("mnist1d", "train", data_dir)
    kw = dict(
        global_batch_size=32,
        preprocess=preprocess.sequence_classification,
        process_index=0,
        process_count=1,
    )
    a = _first_batches(source, 3, seed=7, **kw)
    b = _first_batches(source, 3, seed=7, **kw)
    c = _first_batches(source, 3, seed=8, **kw)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["inputs"], y["inputs"])
        np.testing.assert_array_equal(x["label"], y["label"])
    assert not np.array_equal(a[0]["inputs"], c[0]["inputs"])


class _Indices:
    """A source whose records are their own index, so coverage can be checked exactly."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"index": np.int64(i)}


def test_two_process_shards_are_disjoint_cover_the_epoch_and_match_one_process():
    n, global_batch = 96, 16
    steps = n // global_batch
    shards = [
        _first_batches(
            _Indices(n),
            steps,
            global_batch_size=global_batch,
            seed=3,
            num_epochs=1,
            process_index=p,
            process_count=2,
        )
        for p in (0, 1)
    ]
    single = _first_batches(
        _Indices(n),
        steps,
        global_batch_size=global_batch,
        seed=3,
        num_epochs=1,
        process_index=0,
        process_count=1,
    )
    seen = [np.concatenate([b["index"] for b in shard]) for shard in shards]
    assert len(seen[0]) == len(seen[1]) == n // 2
    assert not set(seen[0]) & set(seen[1])
    assert sorted(np.concatenate(seen)) == list(range(n))
    for step in range(steps):  # each global batch is the 1-process batch, row for row
        together = np.concatenate([shards[0][step]["index"], shards[1][step]["index"]])
        np.testing.assert_array_equal(together, single[step]["index"])
    # A new epoch is reshuffled.
    it = data.train_iterator(
        _Indices(n), global_batch_size=n, seed=3, process_index=0, process_count=1
    )
    first, second = next(it)["index"], next(it)["index"]
    assert sorted(first) == sorted(second) and not np.array_equal(first, second)


def test_iterator_state_restores_position():
    it = data.train_iterator(
        _Indices(50), global_batch_size=4, seed=1, process_index=0, process_count=1
    )
    for _ in range(5):
        next(it)
    state = it.get_state()
    expected = [next(it)["index"] for _ in range(20)]  # crosses an epoch boundary
    fresh = data.train_iterator(
        _Indices(50), global_batch_size=4, seed=1, process_index=0, process_count=1
    )
    fresh.set_state(state)
    for want in expected:
        np.testing.assert_array_equal(next(fresh)["index"], want)


def test_eval_batches_cover_everything_once_with_mask():
    batches = list(
        data.eval_batches(_Indices(37), global_batch_size=8, process_index=0, process_count=1)
    )
    assert len(batches) == 5
    indices = np.concatenate([b["index"][b["mask"]] for b in batches])
    np.testing.assert_array_equal(indices, np.arange(37))


def test_missing_dataset_says_how_to_prepare(tmp_path):
    with pytest.raises(
        data.DatasetUnavailableError, match="python -m jaxml.data.prepare --dataset=mnist"
    ):
        data.data_source("mnist", "train", str(tmp_path))
    with pytest.raises(data.DatasetUnavailableError, match="unknown dataset"):
        data.data_source("no_such_dataset_xyz", "train", str(tmp_path))
    assert list(tmp_path.iterdir()) == []  # nothing created, nothing downloaded


def test_global_batch_not_divisible_by_processes_is_an_error():
    with pytest.raises(ValueError, match="multiple of the process count"):
        data.train_iterator(
            _Indices(10), global_batch_size=5, seed=0, process_index=0, process_count=2
        )


def test_bilinear_resize_matches_jax():
    import jax

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(3, 8, 8, 1)).astype(np.float32)
    for size in (16, 32):
        ours = preprocess.resize_bilinear(images, size)
        reference = jax.image.resize(images, (3, size, size, 1), method="linear")
        np.testing.assert_allclose(ours, np.asarray(reference), rtol=1e-5, atol=1e-3)
    flat = preprocess.get("image_classification_flat", image_size=32)(
        {"image": images.astype(np.uint8), "label": np.arange(3)}
    )
    assert flat["inputs"].shape == (3, 1024, 1)
    assert 0 <= flat["inputs"].min() <= flat["inputs"].max() <= 1
