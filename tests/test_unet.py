"""DDPM++ U-Net: shapes of the named configs, conditioning, attention path, a few training steps."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxml.models import attention
from jaxml.models.attention import dot_product_attention
from jaxml.models.unet import UNET_CONFIGS, UNet, num_groups, unet_config

# XLA's CPU code generation (LLVM passes, fusion emitters) dominates the time
# of these tests on a small shared CPU; these options cut it about 5x and do
# not change what is computed.
FAST_COMPILE = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
    "xla_cpu_use_fusion_emitters": False,
}
fast_jit = functools.partial(jax.jit, compiler_options=FAST_COMPILE)

# 8x8 -> 4x4, attention at 4x4 (3 attention layers: enc block, dec in0, last dec block).
TINY = dict(model_channels=8, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,), dropout=0.0)


def normal(shape, seed=0):
    """Host-side draws: an eager jax.random call compiles a kernel per shape."""
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def n_params(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def init(model, x, c_noise, labels=None, seed=0):
    """The model's own initialisation (one compile)."""
    return fast_jit(model.init)(jax.random.PRNGKey(seed), x, c_noise, labels)["params"]


def random_params(model, x, c_noise, labels=None, seed=0):
    """Params of the model's shapes drawn on the host, with no zero-initialised
    layer: every path (output conv, attention projection) carries signal, and
    nothing is compiled, which matters on a small shared CPU."""
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, c_noise, labels)["params"]
    rng = np.random.default_rng(seed)

    def draw(path, s):
        name = jax.tree_util.keystr(path[-1:])
        if "kernel" in name:
            return rng.normal(size=s.shape).astype(np.float32) / np.sqrt(np.prod(s.shape[:-1]))
        if "scale" in name:
            return (1 + 0.1 * rng.normal(size=s.shape)).astype(np.float32)
        return (0.1 * rng.normal(size=s.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


# A NumPy float64 forward pass of the DDPM++ U-Net, written from EDM's SongUNet
# (NVlabs/edm training/networks.py, as the module docstring describes it) and reading the
# Flax parameter tree by name: an independent check of every value the network computes.


def _np_silu(x):
    return x / (1.0 + np.exp(-x))


def _np_dense(x, p):
    return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def _np_conv3(x, p):
    """3x3 cross-correlation with zero padding ("SAME"); kernel (3, 3, Cin, Cout)."""
    kernel = np.asarray(p["kernel"], np.float64)
    _, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = sum(xp[:, i : i + h, j : j + w, :] @ kernel[i, j] for i in range(3) for j in range(3))
    return out + np.asarray(p["bias"], np.float64)


def _np_group_norm(x, p, eps):
    b, h, w, c = x.shape
    groups = max(1, min(32, c // 4))
    while c % groups:
        groups -= 1
    xg = x.reshape(b, h, w, groups, c // groups)
    mean = xg.mean(axis=(1, 2, 4), keepdims=True)
    var = xg.var(axis=(1, 2, 4), keepdims=True)
    xn = ((xg - mean) / np.sqrt(var + eps)).reshape(x.shape)
    return xn * np.asarray(p["scale"], np.float64) + np.asarray(p["bias"], np.float64)


def _np_resample(x, up, down):
    if down:  # 2x2 average pool
        b, h, w, c = x.shape
        return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
    if up:  # nearest neighbour
        return x.repeat(2, axis=1).repeat(2, axis=2)
    return x


def _np_block(x, emb, p, out_c, m, *, up=False, down=False, attention=False):
    eps, skip_scale = 1e-6, m.skip_scale
    h = _np_silu(_np_group_norm(x, p["norm0"], eps))
    h = _np_conv3(_np_resample(h, up, down), p["conv0"])
    params = _np_dense(emb, p["affine"])[:, None, None, :]
    if m.adaptive_scale:
        scale, shift = np.split(params, 2, axis=-1)
        h = _np_silu(shift + _np_group_norm(h, p["norm1"], eps) * (scale + 1))
    else:
        h = _np_silu(_np_group_norm(h + params, p["norm1"], eps))
    h = _np_conv3(h, p["conv1"])
    skip = x
    if out_c != x.shape[-1] or up or down:
        skip = _np_dense(_np_resample(x, up, down), p["skip"])
    h = (h + skip) * skip_scale
    if attention:
        b, hh, ww, c = h.shape
        heads, d = m.num_heads, c // m.num_heads
        qkv = _np_dense(_np_group_norm(h, p["norm2"], eps), p["qkv"]).reshape(
            b, hh * ww, 3, heads, d
        )
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d)
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        a = np.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, hh, ww, c)
        h = (_np_dense(a, p["proj"]) + h) * skip_scale
    return h


def _np_unet(m, params, x, c_noise, labels=None):
    x = np.asarray(x, np.float64)
    # Noise embedding: EDM's PositionalEmbedding(endpoint=True), halves swapped to [sin, cos].
    half = m.model_channels * m.channel_mult_noise // 2
    freqs = (1.0 / 10000) ** (np.arange(half) / (half - 1))
    args = np.asarray(c_noise, np.float64)[:, None] * freqs[None, :]
    emb = np.concatenate([np.sin(args), np.cos(args)], axis=1)
    if m.num_classes:
        onehot = np.zeros((len(x), m.num_classes))
        if labels is not None:
            ok = (labels >= 0) & (labels < m.num_classes)
            onehot[np.arange(len(x))[ok], np.asarray(labels)[ok]] = np.sqrt(m.num_classes)
        emb = emb + _np_dense(onehot, params["map_label"])
    emb = _np_silu(_np_dense(emb, params["map_layer0"]))
    emb = _np_silu(_np_dense(emb, params["map_layer1"]))

    resolution, levels = x.shape[1], len(m.channel_mult)
    skips = []
    for level, mult in enumerate(m.channel_mult):
        res = resolution >> level
        if level == 0:
            x = _np_conv3(x, params[f"enc_{res}x{res}_conv"])
        else:
            x = _np_block(x, emb, params[f"enc_{res}x{res}_down"], x.shape[-1], m, down=True)
        skips.append(x)
        for i in range(m.num_blocks):
            name, attn = f"enc_{res}x{res}_block{i}", res in m.attn_resolutions
            x = _np_block(x, emb, params[name], m.model_channels * mult, m, attention=attn)
            skips.append(x)
    for level, mult in reversed(list(enumerate(m.channel_mult))):
        res = resolution >> level
        if level == levels - 1:
            x = _np_block(x, emb, params[f"dec_{res}x{res}_in0"], x.shape[-1], m, attention=True)
            x = _np_block(x, emb, params[f"dec_{res}x{res}_in1"], x.shape[-1], m)
        else:
            x = _np_block(x, emb, params[f"dec_{res}x{res}_up"], x.shape[-1], m, up=True)
        for i in range(m.num_blocks + 1):
            x = np.concatenate([x, skips.pop()], axis=-1)
            attn = i == m.num_blocks and res in m.attn_resolutions
            x = _np_block(
                x,
                emb,
                params[f"dec_{res}x{res}_block{i}"],
                m.model_channels * mult,
                m,
                attention=attn,
            )
    x = _np_silu(_np_group_norm(x, params["out_norm"], 1e-6))
    return _np_conv3(x, params["out_conv"])


@pytest.mark.parametrize(
    "options",
    [dict(num_classes=3), dict(adaptive_scale=True, num_heads=2, skip_scale=0.9)],
    ids=["ddpmpp_classes", "adaptive_scale_2heads"],
)
def test_forward_matches_numpy_reference(options):
    model = UNet(**dict(TINY, **options))
    x = normal((2, 8, 8, 1), 4)
    c = jnp.array([-0.4, 0.7])
    labels = jnp.array([2, -1]) if model.num_classes else None  # -1: the null class
    params = random_params(model, x, c, labels, seed=5)
    got = fast_jit(model.apply)({"params": params}, x, c, labels)
    want = _np_unet(model, params, x, c, None if labels is None else np.asarray(labels))
    assert float(np.std(want)) > 0.1  # every path carries signal
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.std(want)))


def test_cifar10_ddpmpp_shapes_and_size():
    model = UNet(**unet_config("cifar10_ddpmpp"))
    assert model.model_channels == 128 and tuple(model.channel_mult) == (2, 2, 2)
    assert model.num_blocks == 4 and tuple(model.attn_resolutions) == (16,)
    assert model.dropout == 0.13 and model.embedding_type == "positional"
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    c = jax.ShapeDtypeStruct((2,), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, c)
    # EDM reports 55.73M parameters for this network.
    assert round(n_params(variables["params"]) / 1e6, 2) == 55.73
    out = jax.eval_shape(model.apply, variables, x, c)
    assert out.shape == (2, 32, 32, 3) and out.dtype == jnp.float32

    # Class-conditional: one extra Dense(10 -> 128) for the label embedding.
    cond = UNet(**unet_config("cifar10_ddpmpp", num_classes=10))
    labels = jax.ShapeDtypeStruct((2,), jnp.int32)
    cond_vars = jax.eval_shape(cond.init, jax.random.PRNGKey(0), x, c, labels)
    assert n_params(cond_vars["params"]) - n_params(variables["params"]) == 10 * 128 + 128


@pytest.mark.parametrize(
    "config,resolution,channels",
    [
        (unet_config("digits_small"), 8, 1),
        (unet_config("digits16_small"), 16, 1),
        (dict(TINY, channel_mult=(1, 1, 2, 2), attn_resolutions=(8,)), 64, 3),
    ],
)
def test_configs_run(config, resolution, channels):
    model = UNet(**config)
    x = normal((1, resolution, resolution, channels))
    c = jnp.array([0.3])
    out = fast_jit(model.apply)({"params": random_params(model, x, c)}, x, c)
    assert out.shape == x.shape and out.dtype == jnp.float32
    assert np.all(np.isfinite(out)) and float(jnp.std(out)) > 1e-2


def test_bfloat16_compute_and_scalar_noise_level():
    model = UNet(**dict(TINY, dtype=jnp.bfloat16))
    x = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, jnp.float32(0.1))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))  # params stay f32
    out = jax.eval_shape(model.apply, variables, x, jnp.float32(0.1))
    assert out.shape == (2, 8, 8, 1) and out.dtype == jnp.float32


def test_attention_goes_through_dot_product_attention(monkeypatch):
    calls = []

    def counting(q, k, v, *, scale):
        calls.append(q.shape)
        return attention.reference_attention(q, k, v, scale=scale)

    monkeypatch.setitem(attention._IMPLS, "counting", counting)
    model = UNet(**dict(TINY, attn_impl="counting"))
    x = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)
    c = jax.ShapeDtypeStruct((2,), jnp.float32)
    jax.eval_shape(model.init, jax.random.PRNGKey(0), x, c)
    # enc 4x4 block, dec 4x4 in0 (always), last dec 4x4 block; one head of 16 channels.
    assert calls == [(2, 16, 1, 16)] * 3


def test_attention_impls_agree():
    q, k, v = normal((2, 16, 2, 8), 0), normal((2, 12, 2, 8), 1), normal((2, 12, 2, 8), 2)
    attend = fast_jit(dot_product_attention, static_argnames="impl")
    ref = attend(q, k, v, impl="reference")
    assert ref.shape == (2, 16, 2, 8)
    # Against a float64 numpy softmax(q·kᵀ/sqrt(d))·v.
    qn, kn, vn = (np.asarray(t, np.float64) for t in (q, k, v))
    logits = np.einsum("bqhd,bkhd->bhqk", qn, kn) / np.sqrt(8)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    np.testing.assert_allclose(ref, np.einsum("bhqk,bkhd->bqhd", w, vn), rtol=1e-5, atol=1e-5)
    for impl in ("default", "xla"):
        np.testing.assert_allclose(attend(q, k, v, impl=impl), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="Unknown attention impl"):
        dot_product_attention(q, k, v, impl="flash9000")

    # That the U-Net's attention goes through here: see the test above.


def test_class_conditioning_and_label_dropout():
    model = UNet(**dict(TINY, num_classes=3, label_dropout=0.5))
    batch = 16
    x = jnp.tile(normal((1, 8, 8, 1)), (batch, 1, 1, 1))
    c = jnp.full((batch,), 0.2)
    labels = jnp.arange(batch) % 3
    variables = {"params": random_params(model, x, c, labels)}
    apply = fast_jit(model.apply, static_argnames="train")

    cond = apply(variables, x, c, labels)
    null = apply(variables, x, c, None)
    # Same image and noise level in every row: rows differ only through the label.
    assert float(jnp.max(jnp.abs(cond[0] - cond[1]))) > 1e-3
    assert float(jnp.max(jnp.abs(cond[0] - null[0]))) > 1e-3
    np.testing.assert_allclose(cond[0], cond[3], rtol=1e-5, atol=1e-6)
    # -1 is the null class, as is labels=None.
    np.testing.assert_allclose(apply(variables, x, c, jnp.full((batch,), -1)), null, atol=1e-6)
    # With train=True each row is either its conditional or the null output.
    dropped = apply(variables, x, c, labels, train=True, rngs={"dropout": jax.random.PRNGKey(3)})
    is_null = np.array([np.allclose(dropped[i], null[i], atol=1e-6) for i in range(batch)])
    is_cond = np.array([np.allclose(dropped[i], cond[i], atol=1e-6) for i in range(batch)])
    assert np.all(is_null ^ is_cond)
    assert 0 < is_null.sum() < batch


def test_bad_options_raise():
    x = jax.ShapeDtypeStruct((2, 10, 10, 1), jnp.float32)
    c = jax.ShapeDtypeStruct((2,), jnp.float32)
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="cannot be downsampled 2 times"):
        jax.eval_shape(UNet(**unet_config("digits16_small")).init, key, x, c)
    x8 = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)
    with pytest.raises(ValueError, match="embedding_type"):
        jax.eval_shape(UNet(**dict(TINY, embedding_type="sinusoid")).init, key, x8, c)
    with pytest.raises(ValueError, match="unconditional"):
        jax.eval_shape(UNet(**TINY).init, key, x8, c, jnp.zeros((2,), jnp.int32))
    with pytest.raises(ValueError, match="label_dropout"):
        jax.eval_shape(UNet(**dict(TINY, label_dropout=0.1)).init, key, x8, c)
    with pytest.raises(ValueError, match="attn_impl"):
        jax.eval_shape(UNet(**dict(TINY, attn_impl="nope")).init, key, x8, c)
    with pytest.raises(ValueError, match="Unknown UNet config"):
        unet_config("imagenet_adm")


@pytest.mark.parametrize(
    "name,resolution", [("digits_small", 8), ("digits_base", 8), ("digits16_small", 16)]
)
def test_named_config_shapes(name, resolution):
    model = UNet(**unet_config(name, num_classes=10))
    x = jax.ShapeDtypeStruct((3, resolution, resolution, 1), jnp.float32)
    c = jax.ShapeDtypeStruct((3,), jnp.float32)
    labels = jax.ShapeDtypeStruct((3,), jnp.int32)
    out, _ = jax.eval_shape(model.init_with_output, jax.random.PRNGKey(0), x, c, labels)
    assert out.shape == x.shape and out.dtype == jnp.float32


def test_named_configs_and_group_norm_groups():
    assert {"cifar10_ddpmpp", "digits_small", "digits_base", "digits16_small"} <= set(UNET_CONFIGS)
    assert unet_config("digits_small", num_classes=10)["num_classes"] == 10
    assert "num_classes" not in UNET_CONFIGS["digits_small"]  # overrides do not leak
    assert [num_groups(c) for c in (8, 16, 32, 128, 256, 96, 36)] == [2, 4, 8, 32, 32, 24, 9]


def test_adam_steps_lower_denoising_loss():
    model = UNet(**TINY)
    clean = jnp.tanh(normal((8, 8, 8, 1), 0))
    noisy = clean + 0.5 * normal(clean.shape, 1)
    c = jnp.full((8,), jnp.log(0.5) / 4)
    params = init(model, noisy, c)
    tx = optax.adam(3e-3)

    @fast_jit
    def step(params, opt_state):
        def loss_fn(p):
            return jnp.mean(jnp.square(noisy + model.apply({"params": p}, noisy, c) - clean))

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = tx.init(params)
    losses = []
    for _ in range(15):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert np.all(np.isfinite(losses))
    # EDM's near-zero output init: F ≈ 0 at first, so the loss starts at the noise's.
    np.testing.assert_allclose(losses[0], float(jnp.mean(jnp.square(noisy - clean))), rtol=1e-3)
    assert losses[-1] < 0.7 * losses[0]
