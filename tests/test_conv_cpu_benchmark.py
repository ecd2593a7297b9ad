"""benchmarks/conv_cpu.py reads a network's convolutions from its jaxpr."""

import benchmark_scripts
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

conv_cpu = benchmark_scripts.load("conv_cpu")


class TwoConvs(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(8, (3, 3), padding="SAME")(x)
        # Inside a remat and a scan body: sub-jaxprs must be walked too.
        x = nn.remat(nn.Conv)(8, (3, 3), padding="SAME")(x)
        k = self.param("k", nn.initializers.lecun_normal(), (3, 3, 8, 8))
        x = jax.lax.scan(lambda c, _: (conv_cpu._conv(c, k), None), x, None, length=2)[0]
        return nn.Conv(4, (3, 3), padding="SAME")(x) + nn.Conv(4, (3, 3), padding="SAME")(x)


def test_counts_each_convolution_once_by_shape():
    model = TwoConvs()
    x = jnp.zeros((2, 6, 6, 3))
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)  # shapes suffice
    jaxpr = jax.make_jaxpr(model.apply)(params, x).jaxpr
    found = conv_cpu.count_convolutions(jaxpr)
    assert found == {
        ((2, 6, 6, 3), (3, 3, 3, 8)): 1,
        ((2, 6, 6, 8), (3, 3, 8, 8)): 2,  # the remat's and the scan body's (once per body)
        ((2, 6, 6, 8), (3, 3, 8, 4)): 2,
    }


def test_rejects_strided_convolutions():
    x = jnp.zeros((1, 8, 8, 2))
    w = jnp.zeros((3, 3, 2, 2))
    jaxpr = jax.make_jaxpr(
        lambda x, w: jax.lax.conv_general_dilated(
            x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
    )(x, w).jaxpr
    with pytest.raises(ValueError, match="stride-1"):
        conv_cpu.count_convolutions(jaxpr)
