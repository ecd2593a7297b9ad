"""EDM's non-leaky augmentation: identities, NumPy references, EDM's label layout, U-Net input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxml.diffusion import augment
from jaxml.models.unet import UNet


def _images(n=6, h=8, w=8, c=3, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, h, w, c)).astype(np.float32)


def test_p_zero_is_identity_with_zero_labels():
    images = _images()
    out, labels = augment.augment(
        jax.random.key(0), images, **{**augment.CIFAR10_PIPELINE, "p": 0.0}
    )
    np.testing.assert_array_equal(np.asarray(out), images)
    assert labels.shape == (6, 9)
    np.testing.assert_array_equal(np.asarray(labels), 0.0)


def test_label_layout_is_edms_order():
    # EDM training/augment.py appends: xflip, yflip, rotate_int (2), translate_int (2), scale,
    # rotate_frac (cos-1, sin), aniso (2), translate_frac (2); CIFAR-10 uses 9 of them.
    assert augment.label_names(**augment.CIFAR10_PIPELINE) == [
        "xflip",
        "yflip",
        "scale",
        "rotate_frac_cos",
        "rotate_frac_sin",
        "aniso_cos",
        "aniso_sin",
        "translate_frac_x",
        "translate_frac_y",
    ]
    assert augment.augment_dim(**augment.CIFAR10_PIPELINE) == 9
    everything = {name: 1.0 for name in augment.LABELS}
    assert augment.augment_dim(**everything) == 13
    with pytest.raises(ValueError, match="unknown augmentation options"):
        augment.augment_dim(xflips=1)


def test_pure_xflip_equals_np_flip_and_sets_its_label():
    images = _images(n=64)
    out, labels = augment.augment(jax.random.key(1), images, p=1.0, xflip=1.0)
    flipped = np.asarray(labels[:, 0]) == 1.0
    assert 10 < flipped.sum() < 54  # a fair coin per image
    np.testing.assert_array_equal(np.asarray(out)[flipped], np.flip(images[flipped], axis=2))
    np.testing.assert_array_equal(np.asarray(out)[~flipped], images[~flipped])
    # The CIFAR-10 recipe's label 0 is the same x-flip flag (its other components at p=0).
    _, labels = augment.augment(jax.random.key(1), images, **augment.CIFAR10_PIPELINE)
    assert set(np.unique(np.asarray(labels[:, 0]))) <= {0.0, 1.0}


def _numpy_mirror_shift(image, tx, ty):
    """Output (y, x) = input(y + ty, x - tx) with reflect padding, by np.pad."""
    h, w = image.shape[:2]
    pad = max(h, w)
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    return padded[pad + ty : pad + ty + h, pad - tx : pad - tx + w]


def test_integer_translation_matches_numpy_reflect_pad():
    images = _images(n=5, h=8, w=10)
    tx = np.array([0, 1, -2, 3, -1])
    ty = np.array([0, -1, 2, 1, 3])
    out = np.asarray(
        augment.translate_integer(jnp.asarray(images), jnp.asarray(tx), jnp.asarray(ty))
    )
    for i in range(5):
        np.testing.assert_array_equal(out[i], _numpy_mirror_shift(images[i], tx[i], ty[i]))
    # Through `augment`: labels are the shifts in units of size · translate_int_max.
    out, labels = augment.augment(jax.random.key(2), images, p=1.0, translate_int=1.0)
    labels = np.asarray(labels)
    shifts_x = np.round(labels[:, 0] * 10 * 0.125).astype(int)
    shifts_y = np.round(labels[:, 1] * 8 * 0.125).astype(int)
    for i in range(5):
        expected = _numpy_mirror_shift(images[i], shifts_x[i], shifts_y[i])
        np.testing.assert_array_equal(np.asarray(out)[i], expected)


def test_affine_sampling_conventions():
    images = _images(n=2, h=8, w=8)
    eye = np.broadcast_to(np.eye(3, dtype=np.float32), (2, 3, 3))
    np.testing.assert_array_equal(np.asarray(augment.apply_affine(images, eye)), images)
    # G⁻¹ = rotation by +90° (x right, y down): out(x, y) = in(-y, x) about the centre,
    # which is NumPy's rot90 counter-clockwise on the (H, W) axes.
    rot = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], np.float32)
    out = np.asarray(augment.apply_affine(images, np.stack([rot, rot])))
    np.testing.assert_allclose(out, np.rot90(images, k=1, axes=(1, 2)), atol=1e-6)
    # G⁻¹ = translation by (-2, 0): content moves right by 2, mirrored at the left edge.
    shift = np.array([[1, 0, -2], [0, 1, 0], [0, 0, 1]], np.float32)
    out = np.asarray(augment.apply_affine(images, np.stack([shift, shift])))
    np.testing.assert_allclose(out[0], _numpy_mirror_shift(images[0], 2, 0), atol=1e-6)


def test_rotation_labels_are_cos_sin_of_one_angle():
    _, labels = augment.augment(jax.random.key(3), _images(n=32), p=1.0, rotate_frac=1.0)
    cos_m1, sin = np.asarray(labels).T
    np.testing.assert_allclose((cos_m1 + 1) ** 2 + sin**2, 1.0, atol=1e-5)
    assert np.abs(sin).max() > 0.5


@pytest.mark.slow  # ~4 min on a loaded 2-core CPU; tests/test_augment_training.py covers the path
def test_augment_labels_reach_the_unet():
    net = UNet(
        model_channels=16,
        channel_mult=(1, 2),
        num_blocks=1,
        attn_resolutions=(),
        dropout=0.0,
        augment_dim=9,
    )
    x = jnp.asarray(_images(n=2, h=8, w=8, c=1))
    c_noise = jnp.zeros((2,))
    params = net.init(jax.random.key(0), x, c_noise)
    assert "map_augment" in params["params"]
    # EDM zero-initialises the output layer; perturb every weight so outputs are O(1).
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(
        treedef, [p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
    )
    plain = net.apply(params, x, c_noise)
    zeros = net.apply(params, x, c_noise, augment_labels=jnp.zeros((2, 9)))
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(zeros))  # absent = no augmentation
    labelled = net.apply(params, x, c_noise, augment_labels=jnp.ones((2, 9)))
    change = np.abs(np.asarray(labelled) - np.asarray(plain)).max()
    assert change > 1e-2 * np.abs(np.asarray(plain)).max()
    with pytest.raises(ValueError, match="augment_labels must be"):
        net.apply(params, x, c_noise, augment_labels=jnp.ones((2, 8)))
    plain_net = UNet(model_channels=16, channel_mult=(1, 2), num_blocks=1, attn_resolutions=())
    with pytest.raises(ValueError, match="augment_dim=0"):
        plain_net.init(jax.random.key(0), x, c_noise, augment_labels=jnp.ones((2, 9)))
