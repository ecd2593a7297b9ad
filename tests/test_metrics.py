"""Sample-quality metrics: Fréchet distance, KID, k-NN precision/recall, memorisation, FD-digits,
and the Inception-v3 FID network's shapes and weights file.

Statistics are checked against closed forms, scipy and plain NumPy loops.
Here the Inception tests cover the architecture (shapes, parameter count
against torchvision's), the weights file format (round trip, ignored
extras, clear errors) and the FID plumbing; that its features are right is
tests/test_fid.py's cross-check against pytorch-fid's own module (slow set).
"""

import json
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from jaxml.diffusion import metrics

# torchvision's inception_v3 has 27,161,264 parameters; minus the aux head
# (3,326,696) and the fc layer (2,049,000) leaves the pool3 backbone.
TORCHVISION_BACKBONE_PARAMS = 27_161_264 - 3_326_696 - 2_049_000


def _random_psd(rng, dim, rank=None):
    a = rng.standard_normal((dim, rank or dim))
    return a @ a.T / dim


# --- Fréchet distance --------------------------------------------------------


def test_frechet_distance_1d_closed_form():
    # N(m1, v1) vs N(m2, v2): (m1 - m2)² + v1 + v2 - 2 sqrt(v1 v2) = Δm² + (s1 - s2)².
    assert metrics.frechet_distance(1.0, 4.0, -2.0, 9.0) == pytest.approx(9.0 + (2.0 - 3.0) ** 2)


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal(7), rng.standard_normal(7)
    s1, s2 = rng.uniform(0.1, 3.0, 7), rng.uniform(0.1, 3.0, 7)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2.0 * np.sqrt(s1 * s2))
    got = metrics.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_matches_scipy_sqrtm_full_covariance():
    rng = np.random.default_rng(1)
    dim = 24
    mu1, mu2 = rng.standard_normal(dim), rng.standard_normal(dim)
    s1, s2 = _random_psd(rng, dim), _random_psd(rng, dim)
    # The textbook computation (pytorch-fid's), independent of the eigh route.
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2.0 * np.real(covmean))
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_zero_for_identical_and_symmetric():
    rng = np.random.default_rng(2)
    mu = rng.standard_normal(16)
    singular = _random_psd(rng, 16, rank=5)  # rank-deficient, as with dead ReLU units
    full = _random_psd(rng, 16)
    assert metrics.frechet_distance(mu, singular, mu, singular) == pytest.approx(0.0, abs=1e-9)
    assert metrics.frechet_distance(mu, full, mu, full) == pytest.approx(0.0, abs=1e-9)
    mu2 = rng.standard_normal(16)
    ab = metrics.frechet_distance(mu, singular, mu2, full)
    ba = metrics.frechet_distance(mu2, full, mu, singular)
    assert ab > 0 and ab == pytest.approx(ba, rel=1e-9)


def test_feature_statistics_and_input_errors():
    features = np.random.default_rng(3).standard_normal((50, 4))
    mu, sigma = metrics.feature_statistics(features)
    np.testing.assert_allclose(mu, features.mean(0))
    np.testing.assert_allclose(sigma, np.cov(features.T))
    assert metrics.feature_statistics(features[:, :1])[1].shape == (1, 1)
    with pytest.raises(ValueError, match="at least 2"):
        metrics.feature_statistics(features[:1])
    with pytest.raises(ValueError, match=r"\(N, F\)"):
        metrics.feature_statistics(features[0])
    with pytest.raises(ValueError, match="sigma2 must be"):
        metrics.frechet_distance(mu, sigma, mu, sigma[:3, :3])
    with pytest.raises(ValueError, match="NaN"):
        metrics.frechet_distance(mu, sigma * np.nan, mu, sigma)


# --- KID, k-NN precision/recall, memorisation --------------------------------


def _mmd2_loop(x, y):
    """Unbiased MMD² with k(a, b) = (a·b / d + 1)³ by explicit loops over pairs."""
    d = x.shape[1]
    k = lambda a, b: (float(np.dot(a, b)) / d + 1.0) ** 3
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(a, b) for a in x for b in y) / (m * n)
    return xx + yy - 2 * xy


def test_mmd2_unbiased_matches_pair_loop():
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((13, 5)), rng.standard_normal((9, 5)) + 0.3
    assert metrics.mmd2_unbiased(x, y) == pytest.approx(_mmd2_loop(x, y), rel=1e-10)


def test_kid_is_unbiased_with_an_honest_standard_error():
    rng = np.random.default_rng(8)
    reference = rng.standard_normal((3000, 16))
    same = metrics.kid(rng.standard_normal((4000, 16)), reference, subset_size=500)
    assert same["kid_subsets"] == 8 and same["kid_subset_size"] == 500
    assert abs(same["kid"]) < 4 * same["kid_se"], same  # expectation 0
    shifted = metrics.kid(rng.standard_normal((4000, 16)) + 0.3, reference, subset_size=500)
    assert shifted["kid"] > 10 * shifted["kid_se"], shifted
    # The s.e. describes the spread of KID over independent sample sets.
    repeats = [
        metrics.kid(rng.standard_normal((1000, 16)) + 0.3, reference, subset_size=250, seed=i)
        for i in range(12)
    ]
    spread = np.std([r["kid"] for r in repeats], ddof=1)
    typical_se = np.median([r["kid_se"] for r in repeats])
    assert 0.4 < typical_se / spread < 2.5, (typical_se, spread)


def _precision_recall_loop(fake, real, k):
    def radii(points):
        return [sorted(np.linalg.norm(points - p, axis=1))[k] for p in points]  # [0] is itself

    def inside(points, centres, r):
        return np.mean(
            [any(np.linalg.norm(p - c) <= rc for c, rc in zip(centres, r)) for p in points]
        )

    return inside(fake, real, radii(real)), inside(real, fake, radii(fake))


def test_precision_recall_matches_loop_and_limits():
    rng = np.random.default_rng(9)
    real = rng.standard_normal((40, 3))
    fake = 0.5 * rng.standard_normal((30, 3)) + np.array([1.0, 0.0, 0.0])
    got = metrics.precision_recall(fake, real, k=3)
    precision, recall = _precision_recall_loop(fake, real, 3)
    assert got["precision"] == pytest.approx(precision) and got["recall"] == pytest.approx(recall)
    assert 0 < got["recall"] < 1
    same = metrics.precision_recall(real, real, k=3)
    assert same == {"precision": 1.0, "recall": 1.0}


def test_memorization_rate_definition():
    rng = np.random.default_rng(10)
    train, held_out = rng.standard_normal((500, 6)), rng.standard_normal((400, 6))
    fresh = rng.standard_normal((2000, 6))
    copies = train[rng.integers(0, 500, 300)] + 1e-3 * rng.standard_normal((300, 6))
    fresh_rate = metrics.memorization_rate(fresh, train, held_out)
    # Threshold: the 5% quantile of held-out nearest-train distances, by a loop.
    nn = [np.min(np.linalg.norm(train - h, axis=1)) for h in held_out]
    assert fresh_rate["memorization_threshold"] == pytest.approx(np.quantile(nn, 0.05))
    assert 0.02 < fresh_rate["memorization_rate"] < 0.09  # new data: about the 5% base rate
    assert metrics.memorization_rate(copies, train, held_out)["memorization_rate"] == 1.0
    half = np.concatenate([fresh[:300], copies])
    assert metrics.memorization_rate(half, train, held_out)["memorization_rate"] == pytest.approx(
        0.5, abs=0.05
    )


# --- FD-digits ---------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_dirs(tmp_path_factory):
    """(cache_dir, data_dir) with the classifier trained once for this module."""
    cache_dir = str(tmp_path_factory.mktemp("metrics_cache"))
    data_dir = str(tmp_path_factory.mktemp("metrics_data"))
    metrics.digits_classifier(cache_dir, data_dir)
    return cache_dir, data_dir


def test_digits_classifier_accuracy_and_cache(digits_dirs):
    cache_dir, data_dir = digits_dirs
    params, info = metrics.digits_classifier(cache_dir, data_dir)  # read back from the cache
    assert info["test_accuracy"] >= 0.95, info
    payload = flax.serialization.msgpack_restore(
        (metrics.Path(cache_dir) / metrics.DIGITS_CACHE_FILE).read_bytes()
    )
    assert payload["version"] == metrics.DIGITS_CLASSIFIER_VERSION
    assert payload["info"]["test_accuracy"] == info["test_accuracy"]


def test_digits_stale_or_corrupt_cache_is_retrained(digits_dirs, tmp_path, monkeypatch):
    good_params, good_info = metrics.digits_classifier(*digits_dirs)
    calls = []

    def fake_train(data_dir, **kwargs):
        calls.append(kwargs)
        return good_params, good_info

    monkeypatch.setattr(metrics.digits, "train_digits_classifier", fake_train)
    cache_file = tmp_path / metrics.DIGITS_CACHE_FILE
    cache_file.write_bytes(
        flax.serialization.msgpack_serialize(
            {
                "version": "digits-old",
                "params": flax.serialization.to_state_dict(good_params),
                "info": good_info,
            }
        )
    )
    metrics.digits_classifier(tmp_path, digits_dirs[1])
    assert len(calls) == 1
    payload = flax.serialization.msgpack_restore(cache_file.read_bytes())
    assert payload["version"] == metrics.DIGITS_CLASSIFIER_VERSION
    metrics.digits_classifier(tmp_path, digits_dirs[1])  # now a cache hit
    assert len(calls) == 1
    cache_file.write_bytes(b"not msgpack at all")
    metrics.digits_classifier(tmp_path, digits_dirs[1])
    assert len(calls) == 2


def test_fd_digits_floor_is_far_below_noise(digits_dirs):
    cache_dir, data_dir = digits_dirs
    numbers = metrics.digits_reference_numbers(cache_dir, data_dir)
    floor = numbers["fd_test_vs_train"]
    assert 0.0 < floor < 10.0, numbers
    assert numbers["fd_uniform_noise"] > 30 * floor, numbers
    assert numbers["fd_gaussian_noise"] > 30 * floor, numbers
    assert metrics.digits_reference_floor(cache_dir, data_dir) == floor

    # fd_digits on the test images is the floor.
    test_images, _ = metrics._load_digits("test", data_dir)
    assert metrics.fd_digits(
        test_images, cache_dir=cache_dir, data_dir=data_dir, batch_size=128
    ) == pytest.approx(floor, rel=1e-6)


def test_16x16_digits_are_scored_against_the_resized_training_data(digits_dirs):
    """A 16×16 model learns the bilinear-resized digits (the training pipeline's resize);
    scored against the raw 8×8 train split, the blur of resize + pooling alone would read as
    a bad model. Against the train split through the same resize, the resized test split
    scores about what the 8×8 test split scores at 8×8."""
    cache_dir, data_dir = digits_dirs
    floor_8 = metrics.digits_reference_floor(cache_dir, data_dir)
    test_16, _ = metrics._load_digits("test", data_dir, image_size=16)  # the pipeline's resize
    assert test_16.shape[1:] == (16, 16, 1)
    fd_16 = metrics.fd_digits(test_16, cache_dir=cache_dir, data_dir=data_dir)
    features = metrics.digits_feature_extractor(cache_dir, data_dir)
    raw_train = metrics.feature_statistics(
        np.asarray(features(metrics._load_digits("train", data_dir)[0]), np.float64)
    )
    fd_vs_raw_8 = metrics.frechet_distance(
        *metrics.feature_statistics(np.asarray(features(test_16), np.float64)), *raw_train
    )
    assert fd_16 < 2 * floor_8, (fd_16, floor_8)
    assert fd_vs_raw_8 > 2 * fd_16, (fd_vs_raw_8, fd_16)
    # 2× nearest-upsampled copies are not what the 16×16 pipeline makes: they score worse.
    nearest = np.repeat(np.repeat(metrics._load_digits("test", data_dir)[0], 2, 1), 2, 2)
    assert metrics.fd_digits(nearest, cache_dir=cache_dir, data_dir=data_dir) > fd_16


def test_digits_features_are_jittable_and_check_shapes(digits_dirs):
    features = metrics.digits_feature_extractor(*digits_dirs)
    images = jnp.zeros((3, 8, 8, 1))
    out = jax.jit(lambda x: features(x) * 2.0)(images)
    assert out.shape == (3, metrics.DIGITS_FEATURES)
    np.testing.assert_allclose(
        np.asarray(out), 2.0 * np.asarray(features(images)), rtol=1e-5, atol=1e-6
    )
    uint8 = np.full((2, 8, 8), 255, np.uint8)
    ones = np.ones((2, 8, 8, 1), np.float32)
    np.testing.assert_allclose(
        np.asarray(features(uint8)), np.asarray(features(ones)), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="multiple of 8"):
        metrics.digits_preprocess(np.zeros((2, 12, 12, 1)))
    with pytest.raises(ValueError, match=r"\(N, H, W, 1\)"):
        metrics.digits_preprocess(np.zeros((2, 8, 8, 3)))


# --- Inception-v3 / FID ------------------------------------------------------


def test_inception_architecture_shapes():
    out = jax.eval_shape(
        lambda x: metrics.InceptionV3().init_with_output(jax.random.key(0), x)[0],
        jax.ShapeDtypeStruct((2, 299, 299, 3), jnp.float32),
    )
    assert out.shape == (2, metrics.INCEPTION_FEATURES)
    shapes = metrics.inception_param_shapes()
    assert len(shapes) == 94 * 5  # 94 conv+BN blocks: kernel, scale, bias, mean, var
    trainable = sum(
        int(np.prod(s.shape)) for k, s in shapes.items() if k[-1] not in ("mean", "var")
    )
    assert trainable == TORCHVISION_BACKBONE_PARAMS
    # Spot checks of torchvision names/shapes, including the FID-specific Mixed_7c block.
    assert shapes[("Mixed_6b", "branch7x7_2", "conv", "kernel")].shape == (1, 7, 128, 128)
    assert shapes[("Mixed_7c", "branch_pool", "conv", "kernel")].shape == (1, 1, 2048, 192)


def test_inception_preprocess():
    gray = np.random.default_rng(4).integers(0, 256, (2, 8, 8), dtype=np.uint8)
    x = metrics.inception_preprocess(gray)
    assert x.shape == (2, 299, 299, 3)
    np.testing.assert_allclose(np.asarray(x[..., 0]), np.asarray(x[..., 2]))
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    as_float = metrics.inception_preprocess(gray.astype(np.float32) / 127.5 - 1.0)
    np.testing.assert_allclose(np.asarray(x), np.asarray(as_float), atol=1e-6)
    constant = metrics.inception_preprocess(np.full((1, 32, 32, 3), 0.25, np.float32))
    np.testing.assert_allclose(np.asarray(constant), 0.25, atol=1e-6)
    with pytest.raises(ValueError, match="C in"):
        metrics.inception_preprocess(np.zeros((1, 8, 8, 2)))


def test_inception_missing_weights_error(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / metrics.INCEPTION_WEIGHTS_FILE
    with pytest.raises(FileNotFoundError) as err:
        metrics.load_inception_params(missing)
    message = str(err.value)
    assert str(missing) in message and "never downloads" in message
    assert metrics.INCEPTION_PTH_URL in message and "JAXML_INCEPTION_WEIGHTS" in message
    monkeypatch.setenv("JAXML_INCEPTION_WEIGHTS", str(missing))
    assert metrics.default_inception_weights_path() == missing
    with pytest.raises(FileNotFoundError, match="never downloads"):
        metrics.fid(np.zeros((2, 8, 8, 1)), (np.zeros(2048), np.eye(2048)))


def test_inception_bad_weights_errors(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip file")
    with pytest.raises(metrics.InceptionWeightsError, match="cannot read"):
        metrics.load_inception_params(garbage)
    partial = tmp_path / "partial.npz"
    np.savez(partial, **{"Conv2d_1a_3x3.conv.weight": np.zeros((32, 3, 3, 3), np.float32)})
    with pytest.raises(metrics.InceptionWeightsError, match="missing"):
        metrics.load_inception_params(partial)


def test_inception_weights_round_trip(tmp_path):
    params = metrics.init_inception_params(seed=0)
    path = tmp_path / metrics.INCEPTION_WEIGHTS_FILE
    metrics.save_inception_params(params, path)
    with np.load(path) as data:
        arrays = dict(data)
    # The state-dict layout of pytorch-fid's file: torch names, OIHW kernels.
    assert arrays["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert arrays["Mixed_7b.branch3x3_2a.conv.weight"].shape == (384, 384, 1, 3)
    assert "Mixed_5b.branch_pool.bn.running_var" in arrays
    # Entries of the real file that the pool3 network does not use are ignored.
    arrays.update(
        {
            "fc.weight": np.zeros((1008, 2048), np.float32),
            "Conv2d_1a_3x3.bn.num_batches_tracked": np.array(0),
        }
    )
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    loaded = metrics.load_inception_params(path)
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, params)

    # A wrong shape (e.g. a kernel stored HWIO instead of OIHW) is named.
    arrays["Conv2d_2a_3x3.conv.weight"] = arrays["Conv2d_2a_3x3.conv.weight"][:16]
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    wrong = r"Conv2d_2a_3x3.conv.weight is \(16, 32, 3, 3\), want \(32, 32, 3, 3\)"
    with pytest.raises(metrics.InceptionWeightsError, match=wrong):
        metrics.load_inception_params(path)


def test_fid_and_reference_stats_plumbing(tmp_path):
    # A cheap stand-in feature network: the pixels themselves.
    def features_fn(images):
        return np.asarray(images, np.float32).reshape(len(images), -1)

    rng = np.random.default_rng(6)
    reference = rng.uniform(-1, 1, (300, 2, 2, 1)).astype(np.float32)
    stats_path = tmp_path / "stats" / "ref.npz"
    mu, sigma = metrics.compute_reference_stats(
        reference, stats_path, features_fn=features_fn, batch_size=64, quantize=False
    )
    loaded_mu, loaded_sigma = metrics.load_reference_stats(stats_path)
    np.testing.assert_array_equal(loaded_mu, mu)
    np.testing.assert_array_equal(loaded_sigma, sigma)
    np.testing.assert_allclose(mu, reference.reshape(300, -1).astype(np.float64).mean(0))

    same = metrics.fid(reference, stats_path, features_fn=features_fn, quantize=False)
    assert same == pytest.approx(0.0, abs=1e-9)
    shifted = reference + 0.5
    shifted_stats = metrics.feature_statistics(features_fn(shifted))
    expected = metrics.frechet_distance(*shifted_stats, mu, sigma)
    assert expected == pytest.approx(4 * 0.25, rel=1e-6)  # only the means moved
    for stats in (stats_path, (mu, sigma), {"mu": mu, "sigma": sigma}):
        got = metrics.fid(shifted, stats, features_fn=features_fn, batch_size=64, quantize=False)
        assert got == pytest.approx(expected, rel=1e-9)

    with pytest.raises(FileNotFoundError, match="jaxml.diffusion.fid stats"):
        metrics.load_reference_stats(tmp_path / "none.npz")
    np.savez(tmp_path / "bad.npz", mean=mu)
    with pytest.raises(ValueError, match="'mu' and 'sigma'"):
        metrics.load_reference_stats(tmp_path / "bad.npz")


def test_fd_floor_curve_predicts_fd_of_fresh_samples():
    # Gaussian features against their true statistics: E FD(n) -> 0 like b/n. The curve is
    # fitted on a finite held-out pool of 1,200; compare with fresh draws at other n.
    rng = np.random.default_rng(0)
    dim, pool = 6, 1200
    truth = (np.zeros(dim), np.eye(dim))
    c, b = metrics.fd_floor_curve(rng.standard_normal((pool, dim)), truth, draws=16)
    assert b > 0 and abs(c) < b / pool  # the pool's own deviation bounds the intercept
    for n in (600, 4000):
        direct = np.mean(
            [
                metrics.frechet_distance(
                    *metrics.feature_statistics(rng.standard_normal((n, dim))), *truth
                )
                for _ in range(100)
            ]
        )
        assert abs(c + b / n - direct) < 0.5 * b / pool, (n, c + b / n, direct)


@pytest.mark.slow  # ~1 min on an idle 2-core CPU (512-d FDs for the floor curves, KID, k-NN)
def test_evaluate_digits_on_real_copies_and_noise(digits_dirs):
    cache_dir, data_dir = digits_dirs
    train_images, _ = metrics._load_digits("train", data_dir)
    test_images, _ = metrics._load_digits("test", data_dir)
    kwargs = dict(cache_dir=cache_dir, data_dir=data_dir)
    real = metrics.evaluate_digits(test_images, **kwargs)
    assert real["num_samples"] == 360
    assert real["fd_test"] == pytest.approx(0.0, abs=1e-9)  # the test split's own statistics
    # Unseen real images score their own floor at the same N.
    assert real["fd_train"] == pytest.approx(real["fd_train_floor"], rel=0.1)
    assert abs(real["kid_train"]) < 4 * real["kid_train_se"] + 1e-3
    assert real["precision"] > 0.8 and real["recall"] > 0.5
    assert real["memorization_rate"] < 0.15 and real["memorization_base_rate"] == 0.05

    copies = metrics.evaluate_digits(train_images[:512], **kwargs)
    assert copies["memorization_rate"] == 1.0 and copies["precision"] == 1.0

    noise = np.random.default_rng(12).uniform(-1, 1, (512, 8, 8, 1)).astype(np.float32)
    bad = metrics.evaluate_digits(noise, **kwargs)
    assert bad["fd_train"] > 20 * bad["fd_train_floor"]

    # The floor curves are kept on disk: a new process reads them, a corrupt file is redone.
    from jaxml.diffusion.metrics import digits as digits_module

    files = sorted(Path(cache_dir).glob("digits_fd_floor_*.json"))
    assert len(files) == 2
    for f in files:
        f.write_text(json.dumps({"c": 1.0, "b": 0.0}))
    digits_module._floor_curve_cached.cache_clear()
    assert metrics.evaluate_digits(noise, **kwargs)["fd_train_floor"] == 1.0
    for f in files:
        f.write_text("{not json")
    digits_module._floor_curve_cached.cache_clear()
    again = metrics.evaluate_digits(noise, **kwargs)
    assert again["fd_train_floor"] == pytest.approx(bad["fd_train_floor"], rel=1e-12)
    assert bad["kid_train"] > 10 * bad["kid_train_se"]
    assert bad["precision"] < 0.05 and bad["memorization_rate"] == 0.0
