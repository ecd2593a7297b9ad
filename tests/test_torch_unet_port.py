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


def _torch_grads_as_flax(net, params, port):
    """The .grad of each torch parameter in the Flax tree layout (load_flax_params inverted)."""
    modules = dict(net.named_modules())

    def visit(prefix, tree):
        if "kernel" not in tree and "scale" not in tree:
            return {k: visit([*prefix, k], sub) for k, sub in tree.items()}
        head = prefix[0]
        path = "enc." if head.startswith("enc_") else "dec." if head.startswith("dec_") else ""
        layer = modules[path + ".".join(prefix)]
        out = {}
        for key, value in tree.items():
            if key == "scale":
                g = layer.weight.grad
            elif key == "bias":
                g = layer.bias.grad
            elif np.ndim(value) == 4:
                g = layer.weight.grad.permute(2, 3, 1, 0)
            elif isinstance(layer, torch.nn.Conv2d):
                g = layer.weight.grad[:, :, 0, 0].T
            else:
                g = layer.weight.grad.T
            out[key] = g.numpy()
        return out

    return visit([], params)


@pytest.mark.parametrize("adaptive_scale", [False, True])
def test_parameter_and_input_gradients_match_torch_autograd(port, adaptive_scale):
    """The U-Net's backward (hand-written for GroupNorm+SiLU and the projections,
    jaxml/models/fused_layers.py) against PyTorch autograd through the port."""
    options = dict(model_channels=8, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,))
    model = UNet(dropout=0.0, adaptive_scale=adaptive_scale, **options)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 8, 8, 2)).astype(np.float32)
    c_noise = rng.normal(size=(3,)).astype(np.float32)
    cot = rng.normal(size=(3, 8, 8, 2)).astype(np.float32)
    params = random_params(model, jnp.asarray(x), jnp.asarray(c_noise), None)

    def loss(p, x):
        return jnp.vdot(model.apply({"params": p}, x, c_noise), cot)

    ours_p, ours_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, jnp.asarray(x))

    net = port.TorchUNet(8, 2, dropout=0.0, adaptive_scale=adaptive_scale, **options)
    port.load_flax_params(net, params)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().requires_grad_(True)
    out = net(xt, torch.from_numpy(c_noise), None, None)
    (out * torch.from_numpy(cot).permute(0, 3, 1, 2)).sum().backward()
    theirs_p = _torch_grads_as_flax(net, params, port)
    np.testing.assert_allclose(
        xt.grad.permute(0, 2, 3, 1).numpy(), np.asarray(ours_x), rtol=1e-3, atol=1e-4
    )
    flat_ours = jax.tree_util.tree_flatten_with_path(jax.device_get(ours_p))[0]
    flat_theirs = dict(jax.tree_util.tree_flatten_with_path(theirs_p)[0])
    assert len(flat_ours) == len(flat_theirs)
    for path, g in flat_ours:
        scale = max(np.abs(g).max(), 1e-3)
        np.testing.assert_allclose(
            flat_theirs[path] / scale, np.asarray(g) / scale, atol=2e-4, err_msg=str(path)
        )


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
