"""JAX's shipped Pallas attention kernels (interpret mode on CPU) vs the reference, and "auto".

The TPU kernel runs in the TPU interpreter (`pltpu.force_tpu_interpret_mode`),
the GPU (Triton) kernel in the Pallas interpreter (`mha(interpret=True)`); both
forward and the kernels' own backward (custom VJP) are checked. On a TPU or GPU
machine the kernel of that backend is also checked compiled.
"""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxml import auto_impl
from jaxml.models import attention
from jaxml.models.attention import (
    dot_product_attention,
    reference_attention,
    resolve_attention_impl,
)
from pallas_kernels import attention as pallas_attention

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
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


# interpret=True everywhere; the compiled kernel on its hardware, a reported skip elsewhere.
TPU_MODES = [True, pytest.param(False, marks=pytest.mark.tpu)]
GPU_MODES = [True, pytest.param(False, marks=pytest.mark.gpu)]


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
        ("gpu", jnp.bfloat16, 64, "cudnn"),
        ("cuda", jnp.float16, 128, "cudnn"),
        ("gpu", jnp.float32, 64, "xla"),  # cuDNN flash needs half precision
        ("gpu", jnp.bfloat16, 256, "xla"),  # head_dim > 128 (CIFAR-10 DDPM++: 1 head x 256)
        ("gpu", jnp.bfloat16, 36, "xla"),  # not a multiple of 8
        ("rocm", jnp.bfloat16, 64, "xla"),  # not in the table
        ("cpu", jnp.float32, 64, "xla"),
    ],
)
def test_auto_follows_a_measured_table(backend, dtype, head_dim, expected):
    table = {"tpu": "pallas_tpu", "gpu": "cudnn"}  # as if both had been measured fastest
    assert resolve_attention_impl(backend, dtype, head_dim, table) == expected
    assert expected in attention.attention_impls()


@pytest.mark.parametrize("backend", ["cpu", "gpu", "tpu"])
def test_auto_without_a_measurement_is_xla(backend):
    """No attention benchmark is committed for any backend: auto is the XLA path."""
    committed = RESULTS / f"attention_{backend}.json"
    if committed.exists():
        report = json.loads(committed.read_text())
        want = auto_impl.fastest_correct(report, "attention")
        assert auto_impl.ATTENTION_AUTO_IMPL.get(backend) == want
        return
    assert backend not in auto_impl.ATTENTION_AUTO_IMPL
    for dtype in (jnp.float32, jnp.bfloat16):
        assert resolve_attention_impl(backend, dtype, 64) == "xla"


def test_auto_on_cpu_is_the_default_path():
    q, k, v, _ = qkv_and_cotangent(64, 4)
    attend = jax.jit(dot_product_attention, static_argnames="impl")
    auto = attend(q, k, v, impl="auto")
    np.testing.assert_array_equal(auto, attend(q, k, v, impl="default"))
    ref = reference_attention(q, k, v, scale=SCALE)
    np.testing.assert_allclose(auto, ref, rtol=1e-5, atol=1e-5)


def test_pallas_is_imported_lazily_and_is_a_leaf():
    """`import jaxml` (and the U-Net) leave Pallas alone; the first "pallas_tpu" call
    imports the kernels (here a fallback shape, so no kernel runs on CPU) without
    touching jaxml's registry; pallas_kernels itself imports no jaxml."""
    code = """
import sys
import jax.numpy as jnp
import pallas_kernels.attention, pallas_kernels.linear_scan
assert not any(m == "jaxml" or m.startswith("jaxml.") for m in sys.modules), "leaf"
for m in [m for m in sys.modules if m.startswith("pallas_kernels")]:
    del sys.modules[m]
import jaxml, jaxml.models.unet
from jaxml import auto_impl
from jaxml.models import attention
assert "pallas_kernels.attention" not in sys.modules
assert not any(m.startswith("jax.experimental.pallas") for m in sys.modules)
before = dict(attention._IMPLS)
x = jnp.ones((1, 16, 1, 8))
out = attention.dot_product_attention(x, x, x, impl="pallas_tpu")
assert out.shape == x.shape
assert "pallas_kernels.attention" in sys.modules
assert attention._IMPLS == before
assert not hasattr(sys.modules["pallas_kernels.attention"], "register")
"""
    env = {"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_kernel_runs_per_device_under_a_mesh(monkeypatch):
    """8 devices (data 4 x fsdp 2): the kernel is traced with 1 of the 8 batch rows, and
    values and gradients equal the reference on the whole batch."""
    from jaxml.parallel.mesh import make_mesh

    mesh = make_mesh({"data": 4, "fsdp": 2}, devices=jax.devices("cpu"))
    shapes = []
    kernel = pallas_attention.pallas_gpu_attention

    def recording(q, k, v, *, scale):
        shapes.append(q.shape)
        return kernel(q, k, v, scale=scale, interpret=True)

    monkeypatch.setattr(pallas_attention, "pallas_gpu_attention", recording)
    rng = np.random.default_rng(1)
    q, k, v, ct = (jnp.asarray(rng.normal(size=(8, 32, 2, 16)), jnp.float32) for _ in range(4))
    fn = lambda q, k, v: dot_product_attention(q, k, v, impl="pallas_gpu", scale=0.25)
    ref = lambda q, k, v: reference_attention(q, k, v, scale=0.25)
    batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
    with jax.set_mesh(mesh):
        out, grads = value_and_grads(fn, *(jax.device_put(x, batch) for x in (q, k, v, ct)))
    assert shapes and all(shape == (1, 32, 2, 16) for shape in shapes), shapes
    ref_out, ref_grads = value_and_grads(ref, q, k, v, ct)
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    for name, g, r in zip("qkv", grads, ref_grads, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5, err_msg=f"d{name}")


@pytest.mark.slow  # ~3 min on a loaded 2-core CPU (interpreted Triton kernel inside a U-Net)
def test_unet_output_with_each_impl_equals_the_reference_impl(monkeypatch):
    """The whole U-Net with its attention (16 tokens, head_dim 16) through each impl equals
    the same network with the plain-jnp reference attention. "pallas_gpu" runs the Triton
    kernel in the interpreter; "pallas_tpu" takes its XLA fallback below 128 tokens.
    Parameters are perturbed: EDM zero-initializes the attention output projection, which
    would make any attention (right or wrong) contribute nothing."""
    from jaxml.models.unet import UNet

    kernel = pallas_attention.pallas_gpu_attention
    monkeypatch.setattr(
        pallas_attention,
        "pallas_gpu_attention",
        lambda q, k, v, *, scale: kernel(q, k, v, scale=scale, interpret=True),
    )

    def unet(attn_impl):
        return UNet(
            model_channels=8,
            channel_mult=(1, 2),
            num_blocks=1,
            attn_resolutions=(4,),
            dropout=0.0,
            attn_impl=attn_impl,
        )

    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 1)), jnp.float32)
    c = jnp.asarray([0.3, -1.2], jnp.float32)
    variables = jax.jit(unet("reference").init)(jax.random.PRNGKey(0), x, c)
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    noisy = [p + 0.3 * jax.random.normal(key, p.shape) for p, key in zip(leaves, keys)]
    variables = jax.tree.unflatten(tree, noisy)
    ref = jax.jit(unet("reference").apply)(variables, x, c)
    for impl in ("auto", "pallas_tpu", "pallas_gpu"):  # one test: the reference compiles once
        out = jax.jit(unet(impl).apply)(variables, x, c)
        assert out.shape == (2, 8, 8, 1)
        atol = 1e-4 * float(jnp.abs(ref).max())
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=atol, err_msg=impl)
