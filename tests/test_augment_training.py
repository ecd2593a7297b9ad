"""EDM augmentation inside the training loss (recipe.make_train_loss): images and labels reach
the network, p = 0 changes nothing, and a label size that does not match is a config error."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxml.diffusion import augment, recipe
from jaxml.tasks import diffusion
from jaxml.training.cli import ConfigError
from train.configs import diffusion_digits


def _config(p: float | None):
    config = diffusion_digits.get_config()
    with config.unlocked():
        if p is not None:
            config.augment = ml_collections.ConfigDict({**augment.DEFAULTS, "p": p, "xflip": 1e8})
            config.model.augment_dim = 1
    return config


def _loss(config, params, images):
    network = recipe.build_network(config.model)
    loss_fn = recipe.make_train_loss(network, config)
    batch = {"image": images, "label": jnp.zeros((images.shape[0],), jnp.int32)}
    return float(loss_fn(params, {}, batch, jax.random.PRNGKey(3))[0])


@pytest.fixture(scope="module")
def symmetric_batch():
    # Left-right symmetric images: an x-flip leaves them as they are, so any change of the
    # loss under xflip-only augmentation can only come from the labels fed to the network.
    rng = np.random.default_rng(0)
    half = rng.uniform(-1, 1, (16, 8, 4, 1)).astype(np.float32)
    return jnp.asarray(np.concatenate([half, half[:, :, ::-1]], axis=2))


def test_labels_reach_the_network_and_images_stay_valid(symmetric_batch):
    config = _config(1.0)
    network = recipe.build_network(config.model)
    params = recipe.init_variables(network, config, jax.random.PRNGKey(0))["params"]
    # EDM zero-initialises the output layer (the net starts at D(x) = c_skip x): perturb every
    # weight so that what the network is fed shows in its output.
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    params = jax.tree.unflatten(
        treedef, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    )
    zeroed = jax.tree.map(jnp.zeros_like, params["map_augment"])
    base = _loss(_config(None), {k: v for k, v in params.items() if k != "map_augment"},
                 symmetric_batch)  # fmt: skip
    # map_augment weights zero: the labels have no effect, flips change nothing -> same loss.
    assert _loss(config, {**params, "map_augment": zeroed}, symmetric_batch) == pytest.approx(
        base, rel=1e-6
    )
    # Real weights: flipped images carry label 1, so the loss moves.
    assert abs(_loss(config, params, symmetric_batch) - base) > 1e-4 * abs(base)


def test_p_zero_is_off(symmetric_batch):
    config = _config(0.0)
    with config.unlocked():
        config.model.augment_dim = 0
    network = recipe.build_network(config.model)
    params = recipe.init_variables(network, config, jax.random.PRNGKey(0))["params"]
    images = symmetric_batch[:, :, ::-1] * 0.5  # not symmetric any more: any flip would show
    assert _loss(config, params, images) == _loss(_config(None), params, images)


def test_label_size_mismatch_is_a_config_error():
    config = _config(0.12)
    with config.unlocked():
        config.model.augment_dim = 9
    with pytest.raises(ConfigError, match="config.model.augment_dim"):
        diffusion.validate(config)
    with config.unlocked():
        config.augment.bogus = 1.0
    with pytest.raises(ConfigError, match="config.augment"):
        diffusion.validate(config)
