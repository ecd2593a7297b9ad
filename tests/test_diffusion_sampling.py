"""Micro-batched sampling and classifier-free guidance (jaxml.diffusion.recipe / samplers)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxml import parallel
from jaxml.diffusion import recipe, samplers
from jaxml.diffusion.preconditioning import get_preconditioner, precondition
from train.configs import diffusion_digits


def tiny_config(num_classes=0, sampler="restart", guidance=1.0):
    config = diffusion_digits.get_config("mlp")
    with config.unlocked():
        config.model.hidden = 32
        config.model.depth = 1
        config.model.num_classes = num_classes
        config.sampler.name = sampler
        config.sampler.num_steps = 4
        config.sampler.restart_intervals = ((2, 1, 0.06, 0.3),)
        config.sampler.guidance = guidance
        config.sampler.S_churn = 1.0  # the stochastic samplers draw noise in every step
    return config


def random_params(config, mesh, seed=0):
    """Random (not near-zero) params, so that the output depends on every input."""
    network, _, state, _ = recipe.create_state(config, mesh)
    leaves, tree = jax.tree.flatten(state.ema_params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    leaves = [0.3 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
    return network, jax.tree.unflatten(tree, leaves)


@pytest.fixture(scope="module")
def mesh():
    return parallel.make_mesh({"data": -1, "fsdp": 1})


def _sample(sample_fn, params, config, mesh, num, batch_size, labels=None, **kw):
    return recipe.sample_images(
        sample_fn,
        params,
        jax.random.PRNGKey(7),
        config,
        num,
        batch_sharding=parallel.batch_sharding(mesh),
        replicated=parallel.replicated(mesh),
        labels=labels,
        batch_size=batch_size,
        **kw,
    )[0]


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "sampler", ["restart", pytest.param("heun", marks=SLOW), pytest.param("stochastic", marks=SLOW)]
)
def test_chunked_equals_unchunked_for_any_count(mesh, sampler, tmp_path):
    config = tiny_config(sampler=sampler)
    network, params = random_params(config, mesh)
    sample_fn = recipe.make_sample_fn(network, config)
    # 20 images: chunks of 8 (the last one padded to 8 and trimmed) vs one chunk of 24.
    chunked = _sample(sample_fn, params, config, mesh, 20, 8, out_dir=tmp_path)
    whole = _sample(sample_fn, params, config, mesh, 20, 24)
    assert chunked.shape == whole.shape == (20, 8, 8, 1)
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    # The first 12 of 20 are the 12 images of a 12-image run: image i depends on i only.
    np.testing.assert_allclose(
        _sample(sample_fn, params, config, mesh, 12, 8), whole[:12], atol=1e-5
    )
    assert np.std(whole, axis=0).mean() > 0.05  # distinct images, not one repeated
    shards = recipe.read_shards(tmp_path)
    np.testing.assert_array_equal(shards["indices"], np.arange(20))
    np.testing.assert_array_equal(shards["images"], chunked)


def test_one_compiled_program_whose_batch_is_the_micro_batch(mesh):
    config = tiny_config(sampler="euler")
    network, params = random_params(config, mesh)
    inner = recipe.make_sample_fn(network, config)
    traced_shapes = []

    def counting(params, key, indices, labels):
        traced_shapes.append(indices.shape)  # runs once per trace, not per call
        return inner.fn(params, key, indices, labels)

    sample_fn = recipe.SampleFn(counting, inner.nfe, inner.per_sample)
    for num in (40, 72, 17):
        images = _sample(sample_fn, params, config, mesh, num, 16)
        assert images.shape[0] == num
    assert traced_shapes == [(16,)]


def test_default_labels_cycle_through_the_classes():
    config = tiny_config(num_classes=10)
    np.testing.assert_array_equal(recipe.default_labels(config, 23), np.arange(23) % 10)
    np.testing.assert_array_equal(recipe.default_labels(tiny_config(), 5), np.zeros(5))


def test_guidance_formula_on_a_toy_denoiser():
    def toy(x, sigma, labels):  # depends on the label; label -1 is the null class
        return x * (labels[:, None] + 2.0) + sigma[:, None] ** 2

    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5)), jnp.float32)
    sigma = jnp.asarray([0.5, 1.0, 2.0])
    labels = jnp.asarray([0, 3, 7])
    for w in (0.0, 1.0, 2.5, -0.5):
        got = samplers.classifier_free_guidance(toy, labels, w)(x, sigma)
        xn, sn, ln = np.asarray(x), np.asarray(sigma), np.asarray(labels)
        d_cond = xn * (ln[:, None] + 2.0) + sn[:, None] ** 2
        d_uncond = xn * 1.0 + sn[:, None] ** 2
        np.testing.assert_allclose(got, d_uncond + w * (d_cond - d_uncond), rtol=1e-6)


def _network_denoiser(network, params, labels):
    """D(x; σ) of the network with the given labels (-1: null class), no guidance code."""
    precond = get_preconditioner("edm")

    def net_fn(x_in, c_noise, lab):
        return network.apply({"params": params}, x_in, c_noise, lab)

    return lambda x, sigma: precondition(precond, net_fn, x, sigma, labels)


def test_guided_denoiser_is_unconditional_at_0_and_conditional_at_1(mesh):
    config = tiny_config(num_classes=10)
    network, params = random_params(config, mesh)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1))
    sigma = jnp.asarray([0.1, 1.0, 5.0, 40.0])
    labels = jnp.asarray([1, 4, 4, 9])
    d_cond = _network_denoiser(network, params, labels)(x, sigma)
    d_uncond = _network_denoiser(network, params, jnp.full((4,), -1))(x, sigma)
    assert float(jnp.abs(d_cond - d_uncond).max()) > 1e-3  # labels reach the network

    def with_labels(x, sigma, lab):
        return _network_denoiser(network, params, lab)(x, sigma)

    for w, expected in ((0.0, d_uncond), (1.0, d_cond), (3.0, d_uncond + 3 * (d_cond - d_uncond))):
        got = samplers.classifier_free_guidance(with_labels, labels, w)(x, sigma)
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=f"w={w}")


@pytest.mark.parametrize(
    "sampler",
    ["restart", *(pytest.param(name, marks=SLOW) for name in ("euler", "heun", "stochastic"))],
)
def test_guidance_and_labels_reach_every_sampler(mesh, sampler):
    base = tiny_config(num_classes=10, sampler=sampler)
    network, params = random_params(base, mesh)
    sample_fns = {}

    def draw(guidance, label):
        config = tiny_config(num_classes=10, sampler=sampler, guidance=guidance)
        if guidance not in sample_fns:  # one compiled program per w, whatever the labels
            sample_fns[guidance] = recipe.make_sample_fn(network, config)
        labels = np.full((8,), label)
        return _sample(sample_fns[guidance], params, config, mesh, 8, 8, labels=labels)

    plain, other_label = draw(1.0, 3), draw(1.0, 5)
    unguided = draw(0.0, 3)  # D_u + 0·(D_c − D_u) on the doubled batch
    null = draw(1.0, -1)  # the null class, sampled without guidance code
    assert np.abs(plain - other_label).max() > 1e-3  # the label changes the images
    assert np.abs(unguided - plain).max() > 1e-3  # w changes the images
    np.testing.assert_allclose(unguided, null, atol=1e-5)  # w = 0: the unconditional model
