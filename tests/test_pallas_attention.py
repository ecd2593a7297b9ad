"""JAX's shipped Pallas attention kernels (interpret mode on CPU) vs the reference, and "auto".

The TPU kernel runs in the TPU interpreter (`pltpu.force_tpu_interpret_mode`),
the GPU (Triton) kernel in the Pallas interpreter (`mha(interpret=True)`); both
forward and the kernels' own backward (custom VJP) are checked. On a TPU or GPU
machine the kernel of that backend is also checked compiled.
"""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxml.models import attention
from jaxml.models.attention import (
    dot_product_attention,
    reference_attention,
    resolve_attention_impl,
)
from pallas_kernels import attention as pallas_attention

HEAD_DIM = 64
SCALE = 1.0 / HEAD_DIM**0.5


def qkv_and_cotangent(length, heads, seed=0):
    rng = np.random.default_rng(seed)
    shape = (2, length, heads, HEAD_DIM)
    return [jnp.asarray(rng.normal(size=shape), jnp.float32) for _ in range(4)]


def value_and_grads(fn, q, k, v, ct):
    """fn(q, k, v) and the gradients of <fn(q, k, v), ct> w.r.t. q, k, v, under one jit."""

    @jax.jit
    def run(q, k, v, ct):
        out, vjp = jax.vjp(fn, q, k, v)
        return out, vjp(ct)

    return run(q, k, v, ct)


# Compiled on a GPU/TPU, float32 matmuls may run as TF32 / bf16 passes (10-bit mantissa).
COMPILED_TOL = 2e-2


def assert_matches_reference(fn, length, heads, interpret=True):
    q, k, v, ct = qkv_and_cotangent(length, heads)
    ref = lambda q, k, v: reference_attention(q, k, v, scale=SCALE)
    out, grads = value_and_grads(fn, q, k, v, ct)
    ref_out, ref_grads = value_and_grads(ref, q, k, v, ct)
    if interpret:
        tol_out, tol_grad = dict(rtol=1e-5, atol=1e-5), dict(rtol=1e-4, atol=1e-5)
    else:
        tol_out = tol_grad = dict(rtol=COMPILED_TOL, atol=COMPILED_TOL)
    np.testing.assert_allclose(out, ref_out, **tol_out)
    for name, g, r in zip("qkv", grads, ref_grads, strict=True):
        np.testing.assert_allclose(g, r, **tol_grad, err_msg=f"d{name}")


# interpret=True everywhere; the compiled kernel too where its hardware is.
TPU_MODES = [True] + ([False] if jax.default_backend() == "tpu" else [])
GPU_MODES = [True] + ([False] if jax.default_backend() == "gpu" else [])


@pytest.mark.parametrize("interpret", TPU_MODES)
@pytest.mark.parametrize("heads", [1, 4])
def test_tpu_kernel_matches_reference(heads, interpret):
    assert pallas_attention.tpu_unsupported_reason((2, 256, heads, 64), (2, 256), "float32") is None
    fn = lambda q, k, v: pallas_attention.pallas_tpu_attention(
        q, k, v, scale=SCALE, interpret=interpret
    )
    assert_matches_reference(fn, 256, heads, interpret)


def test_tpu_kernel_falls_back_below_128(caplog):
    """L=64 (e.g. an 8x8 feature map) cannot take the kernel: XLA, with the reason logged."""
    reason = pallas_attention.tpu_unsupported_reason((2, 64, 4, 64), (2, 64, 4, 64), jnp.float32)
    assert reason is not None and "multiples of 128" in reason
    assert "head_dim=192" in pallas_attention.tpu_unsupported_reason(
        (2, 128, 1, 192), (2, 128, 1, 192), jnp.float32
    )
    assert "dtype float16" in pallas_attention.tpu_unsupported_reason(
        (2, 128, 1, 64), (2, 128, 1, 64), jnp.float16
    )
    pallas_attention._logged.clear()
    with caplog.at_level("WARNING", logger=pallas_attention.__name__):
        fn = lambda q, k, v: pallas_attention.pallas_tpu_attention(
            q, k, v, scale=SCALE, interpret=True
        )
        assert_matches_reference(fn, 64, 4)
    assert "falls back to XLA" in caplog.text and "multiples of 128" in caplog.text


@pytest.mark.parametrize("interpret", GPU_MODES)
@pytest.mark.parametrize("length,heads", [(64, 1), (64, 4), (256, 1), (256, 4)])
def test_gpu_kernel_matches_reference(length, heads, interpret):
    shape = (2, length, heads, HEAD_DIM)
    assert pallas_attention.gpu_unsupported_reason(shape, shape, jnp.float32) is None
    fn = lambda q, k, v: pallas_attention.pallas_gpu_attention(
        q, k, v, scale=SCALE, interpret=interpret
    )
    assert_matches_reference(fn, length, heads, interpret)


def test_gpu_kernel_unsupported_reasons():
    assert "multiples of 16" in pallas_attention.gpu_unsupported_reason(
        (2, 24, 1, 64), (2, 24, 1, 64), jnp.float32
    )
    assert "head_dim=8" in pallas_attention.gpu_unsupported_reason(
        (2, 64, 1, 8), (2, 64, 1, 8), jnp.float32
    )
    assert "same number of blocks" in pallas_attention.gpu_unsupported_reason(
        (2, 64, 1, 64), (2, 128, 1, 64), jnp.float32
    )


@pytest.mark.parametrize(
    "backend,dtype,head_dim,expected",
    [
        ("tpu", jnp.float32, 64, "pallas_tpu"),
        ("tpu", jnp.bfloat16, 256, "pallas_tpu"),
        ("gpu", jnp.bfloat16, 64, "cudnn"),
        ("gpu", jnp.float16, 128, "cudnn"),
        ("cuda", jnp.bfloat16, 8, "cudnn"),
        ("gpu", jnp.float32, 64, "xla"),  # cuDNN flash needs half precision
        ("gpu", jnp.bfloat16, 256, "xla"),  # head_dim > 128 (CIFAR-10 DDPM++: 1 head x 256)
        ("gpu", jnp.bfloat16, 36, "xla"),  # not a multiple of 8
        ("rocm", jnp.bfloat16, 64, "xla"),
        ("cpu", jnp.float32, 64, "xla"),
        ("cpu", jnp.bfloat16, 64, "xla"),
    ],
)
def test_resolve_attention_impl(backend, dtype, head_dim, expected):
    assert resolve_attention_impl(backend, dtype, head_dim) == expected
    assert expected in attention.attention_impls()


def test_auto_on_cpu_is_the_default_path():
    q, k, v, _ = qkv_and_cotangent(64, 4)
    attend = jax.jit(dot_product_attention, static_argnames="impl")
    auto = attend(q, k, v, impl="auto")
    np.testing.assert_array_equal(auto, attend(q, k, v, impl="default"))
    ref = reference_attention(q, k, v, scale=SCALE)
    np.testing.assert_allclose(auto, ref, rtol=1e-5, atol=1e-5)


def test_pallas_is_imported_lazily():
    """`import jaxml` (and the U-Net) leave Pallas alone; the first "pallas_tpu" call
    imports and registers the kernels (here a fallback shape, so no kernel runs on CPU)."""
    code = """
import sys
import jax.numpy as jnp
import jaxml, jaxml.models.unet
from jaxml.models import attention
assert "pallas_kernels.attention" not in sys.modules
assert not any(m.startswith("jax.experimental.pallas") for m in sys.modules)
assert {"auto", "pallas_tpu", "pallas_gpu"} <= set(attention.attention_impls())
x = jnp.ones((1, 16, 1, 8))
out = attention.dot_product_attention(x, x, x, impl="pallas_tpu")
assert out.shape == x.shape
from pallas_kernels import attention as pk
assert attention._IMPLS["pallas_tpu"] is pk.pallas_tpu_attention
assert attention._IMPLS["pallas_gpu"] is pk.pallas_gpu_attention
"""
    env = {"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("impl", ["auto", "pallas_tpu", "pallas_gpu"])
def test_unet_accepts_the_new_impls(impl):
    """The U-Net validates and traces with them (abstractly: nothing is lowered, so
    "pallas_gpu" needs no GPU; "pallas_tpu" takes its XLA fallback at 4x4 = 16 tokens)."""
    from jaxml.models.unet import UNet

    model = UNet(
        model_channels=8,
        channel_mult=(1, 2),
        num_blocks=1,
        attn_resolutions=(4,),
        dropout=0.0,
        attn_impl=impl,
    )
    x = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)
    c = jax.ShapeDtypeStruct((2,), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, c)
    assert jax.eval_shape(model.apply, variables, x, c).shape == (2, 8, 8, 1)
