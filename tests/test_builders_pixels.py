"""sMNIST / psMNIST / sCIFAR / LRA Image builders from fake TFDS mnist and cifar10.

References: the official loaders (state-spaces src/dataloaders/basic.py): MNIST pixels
in raster order, / 255, no normalisation; psMNIST = bitreversal_permutation(784);
CIFAR colour Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)); LRA Image
torchvision Grayscale (PIL convert("L")) then Normalize(122.6/255, 61/255);
validation = 10 % of train (train keeps int(0.9 n)).
"""

import numpy as np
import pytest
from paper_task_fakes import write_fake_images
from PIL import Image

from jaxml import data
from jaxml.data import preprocess, sources
from jaxml.data.builders import pixel_tasks
from jaxml.data.sequence_tasks import RECORD_FIELDS


def official_bitreversal(n):
    """The S4 / S5 construction (halves stacked side by side log2 N times), from its text."""
    m = int(np.ceil(np.log2(n)))
    perm = np.arange(1 << m).reshape(1 << m, 1)
    for _ in range(m):
        half = perm.shape[0] // 2
        perm = np.hstack((perm[:half], perm[half:]))
    perm = perm.squeeze(0)
    return perm[perm < n]


def test_psmnist_permutation_is_the_official_bit_reversal():
    np.testing.assert_array_equal(pixel_tasks.PSMNIST_PERMUTATION, official_bitreversal(784))
    np.testing.assert_array_equal(
        pixel_tasks.PSMNIST_PERMUTATION[:8], [0, 512, 256, 768, 128, 640, 384, 64]
    )
    assert sorted(pixel_tasks.PSMNIST_PERMUTATION) == list(range(784))


def test_grayscale_equals_pil():
    rgb = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    rgb[0, :4] = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [1, 2, 3]]
    expected = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(pixel_tasks.pil_grayscale(rgb), expected)


def _all(source):
    return [source[i] for i in range(len(source))]


def _batch(records):
    return {k: np.stack([np.asarray(r[k]) for r in records]) for k in records[0]}


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    arrays = write_fake_images(data_dir, "mnist", (28, 28, 1), n_train=30, n_test=7)
    return data_dir, arrays


def _split_check(name, data_dir, images, n_train):
    train = _all(data.data_source(name, "train", str(data_dir)))
    val = _all(data.data_source(name, "validation", str(data_dir)))
    test = _all(data.data_source(name, "test", str(data_dir)))
    assert (len(train), len(val)) == (int(0.9 * n_train), n_train - int(0.9 * n_train))
    for r in train + val + test:
        for field, (shape, dtype) in RECORD_FIELDS[name].items():
            assert np.asarray(r[field]).shape == shape and np.asarray(r[field]).dtype == dtype
    return train, val, test


def test_smnist_and_psmnist(mnist_dir, tmp_path):
    source_dir, arrays = mnist_dir
    images, labels = arrays["train"]
    by_image = {img.tobytes(): int(y) for img, y in zip(images.reshape(len(images), 784), labels)}
    for name in ("smnist", "psmnist"):
        sources.prepare_dataset(
            name, str(tmp_path), allow_download=True, manual_dir=str(source_dir)
        )
        train, val, test = _split_check(name, tmp_path, images, 30)
        # train and validation together are the source train split, each image once.
        raster = []
        for r in train + val:
            seq = r["sequence"]
            if name == "psmnist":
                unpermuted = np.empty_like(seq)
                unpermuted[official_bitreversal(784)] = seq  # position k holds pixel perm[k]
                seq = unpermuted
            raster.append(seq.tobytes())
            assert by_image[seq.tobytes()] == r["label"]
        assert sorted(raster) == sorted(by_image)
        test_images, test_labels = arrays["test"]
        assert len(test) == 7
        pixels = test_images.reshape(7, 784)
        if name == "psmnist":
            pixels = pixels[:, official_bitreversal(784)]
        # TFDS stored the source in its own order: match records to the fake images.
        order = [next(i for i in range(7) if (pixels[i] == r["sequence"]).all()) for r in test]
        assert sorted(order) == list(range(7))
        batch = preprocess.get("pixel_sequence")(_batch(test))
        assert batch["inputs"].shape == (7, 784, 1) and batch["inputs"].dtype == np.float32
        np.testing.assert_array_equal(batch["lengths"], 784)
        np.testing.assert_array_equal(batch["label"], test_labels[order])
        np.testing.assert_allclose(batch["inputs"][..., 0], pixels[order] / 255.0, rtol=1e-6)


def test_validation_cut_is_fixed(mnist_dir, tmp_path):
    source_dir, _ = mnist_dir
    first = {}
    for run in ("a", "b"):
        sources.prepare_dataset(
            "smnist", str(tmp_path / run), allow_download=True, manual_dir=str(source_dir)
        )
        val = _all(data.data_source("smnist", "validation", str(tmp_path / run)))
        first[run] = [r["sequence"].tobytes() for r in val]
    assert first["a"] == first["b"]


def test_scifar_and_lra_cifar(tmp_path):
    arrays = write_fake_images(tmp_path, "cifar10", (32, 32, 3), n_train=20, n_test=5, seed=1)
    test_images, test_labels = arrays["test"]
    sources.prepare_dataset("scifar", str(tmp_path), allow_download=True)
    sources.prepare_dataset("lra_cifar", str(tmp_path), allow_download=True)
    _split_check("scifar", tmp_path, arrays["train"][0], 20)
    _split_check("lra_cifar", tmp_path, arrays["train"][0], 20)

    colour = _all(data.data_source("scifar", "test", str(tmp_path)))
    flat = test_images.reshape(5, 1024, 3)
    order = [next(i for i in range(5) if (flat[i] == r["sequence"]).all()) for r in colour]
    assert sorted(order) == list(range(5))
    batch = preprocess.get("scifar_sequence")(_batch(colour))
    assert batch["inputs"].shape == (5, 1024, 3) and batch["inputs"].dtype == np.float32
    mean, std = [0.4914, 0.4822, 0.4465], [0.247, 0.243, 0.261]
    np.testing.assert_allclose(batch["inputs"], (flat[order] / 255.0 - mean) / std, atol=1e-5)
    np.testing.assert_array_equal(batch["label"], test_labels[order])

    gray = _all(data.data_source("lra_cifar", "test", str(tmp_path)))
    pil = np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in test_images])
    pil = pil.reshape(5, 1024)
    order = [next(i for i in range(5) if (pil[i] == r["sequence"]).all()) for r in gray]
    assert sorted(order) == list(range(5))
    batch = preprocess.get("lra_cifar_sequence")(_batch(gray))
    assert batch["inputs"].shape == (5, 1024, 1)
    expected = (pil[order][..., None] / 255.0 - 122.6 / 255.0) / (61.0 / 255.0)
    np.testing.assert_allclose(batch["inputs"], expected, atol=1e-5)
    np.testing.assert_array_equal(batch["lengths"], 1024)


def test_missing_source_dataset_names_it_and_writes_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="TFDS dataset 'cifar10'.*--dataset=cifar10"):
        sources.prepare_dataset("scifar", str(tmp_path / "out"), allow_download=True)
    assert not (tmp_path / "out").exists()
