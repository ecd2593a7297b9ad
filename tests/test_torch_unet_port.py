"""benchmarks/torch_unet.py is the same network as jaxml's U-Net: equal parameter counts for
the benchmark configs, and equal outputs with our Flax params copied in (skipped without torch)."""

import benchmark_scripts
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_unet import random_params  # host-drawn params with no zero-initialised layer

from jaxml.diffusion import recipe
from jaxml.models.unet import UNet

torch = pytest.importorskip("torch")

# Faster XLA:CPU compilation of the forward pass (as in tests/test_unet.py); same values.
FAST_COMPILE = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
    "xla_cpu_use_fusion_emitters": False,
}


@pytest.fixture(scope="module")
def port():
    return benchmark_scripts.load("torch_unet", "torch_unet")


@pytest.fixture(scope="module")
def throughput(port):
    return benchmark_scripts.load("diffusion_throughput")


@pytest.mark.parametrize(
    "options",
    [
        # 8x8 -> 4x4, attention at 4x4, one head.
        dict(model_channels=8, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,)),
        # 16x16, 3 levels, two heads, class labels, augmentation labels, adaptive scale.
        dict(
            model_channels=8,
            channel_mult=(1, 2, 2),
            num_blocks=2,
            attn_resolutions=(8,),
            num_heads=2,
            num_classes=3,
            augment_dim=9,
            adaptive_scale=True,
        ),
    ],
)
def test_torch_port_matches_flax_forward(port, options):
    res = 8 if len(options["channel_mult"]) == 2 else 16
    model = UNet(dropout=0.0, **options)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, res, res, 2)).astype(np.float32)
    c_noise = rng.normal(size=(3,)).astype(np.float32)
    labels = np.array([0, 2, -1], np.int32) if options.get("num_classes") else None
    aug = rng.normal(size=(3, 9)).astype(np.float32) if options.get("augment_dim") else None
    params = random_params(model, jnp.asarray(x), jnp.asarray(c_noise), labels)
    kwargs = {} if aug is None else {"augment_labels": jnp.asarray(aug)}
    apply = jax.jit(model.apply, compiler_options=FAST_COMPILE)
    ours = np.asarray(apply({"params": params}, x, c_noise, labels, **kwargs))

    net = port.TorchUNet(res, 2, dropout=0.0, **options)
    load_flax_params = port.load_flax_params
    load_flax_params(net, params)
    assert sum(p.numel() for p in net.parameters()) == sum(x.size for x in jax.tree.leaves(params))
    with torch.no_grad():
        theirs = net(
            torch.from_numpy(x).permute(0, 3, 1, 2),
            torch.from_numpy(c_noise),
            None if labels is None else torch.from_numpy(labels).long(),
            None if aug is None else torch.from_numpy(aug),
        )
    theirs = theirs.permute(0, 2, 3, 1).numpy()
    assert np.abs(ours).mean() > 0.1  # the output carries signal
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # traces CIFAR-10's 55.7M U-Net: ~40 s on a busy 2-core CPU
def test_benchmark_configs_have_equal_parameter_counts(port, throughput):
    """The four benchmark U-Nets: the same parameter count in both (and the issue's sizes)."""
    expected = {
        "digits_small": 188_769,
        "unet4m_8x8": 4_112_705,
        "unet7m_16x16": 6_987_585,
        "cifar10_ddpmpp": 55_733_891,
    }
    for name, (get_config, *_) in throughput.CASES.items():
        config = get_config()
        network = recipe.build_network(config.model)
        size, channels = config.data.image_size, config.data.channels
        x = jnp.zeros((2, size, size, channels))
        shapes = jax.eval_shape(network.init, jax.random.PRNGKey(0), x, jnp.zeros((2,)))
        ours = sum(s.size for s in jax.tree.leaves(shapes))
        with torch.device("meta"):  # shapes only, no memory for CIFAR's 55.7M
            net = port.TorchUNet(size, channels, **recipe.network_fields(config.model))
        assert sum(p.numel() for p in net.parameters()) == ours == expected[name], name
