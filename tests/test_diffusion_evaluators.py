"""The conditional eval's class metrics, checked on real labelled digits (not on samples)."""

import numpy as np
import pytest

from jaxml.data import data_source
from jaxml.diffusion.evaluators import class_metrics


@pytest.fixture(scope="module")
def test_digits(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    source = data_source("digits", "test", data_dir)
    records = [source[i] for i in range(len(source))]
    images = np.stack([r["image"] for r in records])  # uint8
    labels = np.array([r["label"] for r in records], np.int32)
    return images, labels, data_dir


def test_real_digits_with_their_labels(test_digits):
    images, labels, data_dir = test_digits
    right = class_metrics(images, labels, 10, data_dir)
    wrong = class_metrics(images, (labels + 1) % 10, 10, data_dir)
    # The classifier is ~97 % accurate on the test split; the histogram is the split's.
    assert right["class_match"] > 0.9 and wrong["class_match"] < 0.1
    hist = np.array([right[f"class_frac_{c}"] for c in range(10)])
    np.testing.assert_allclose(hist.sum(), 1.0)
    np.testing.assert_allclose(hist, np.bincount(labels, minlength=10) / len(labels), atol=0.03)
    # Real images of class c are close to train images of class c, far from those of c + 1.
    assert right["fd_digits_class_mean"] * 5 < wrong["fd_digits_class_mean"]
