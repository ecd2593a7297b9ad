"""Inception-v3 up to pool3, the feature network of FID (the TF FID graph `inception-2015-12-05`).

The architecture of pytorch-fid's `FIDInceptionA/C/E_1/E_2` blocks on
torchvision's Inception3, with torchvision's submodule names so that a
pytorch-fid / EDM state dict maps onto the parameters one to one (see
`jaxml.diffusion.metrics.inception_fid` for the weights file and the FID protocol).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

INCEPTION_SIZE = 299
INCEPTION_FEATURES = 2048


class _FrozenBatchNorm(nn.Module):
    """Inference-only batch norm: all four statistics are plain (frozen) parameters."""

    epsilon: float = 1e-3

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        mean = self.param("mean", nn.initializers.zeros, (c,))
        var = self.param("var", nn.initializers.ones, (c,))
        return (x - mean) * (scale * jax.lax.rsqrt(var + self.epsilon)) + bias


class _ConvBN(nn.Module):
    """torchvision's BasicConv2d: conv without bias, batch norm (eps 1e-3), ReLU."""

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: str | Sequence[tuple[int, int]] = "VALID"
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(
            self.features,
            self.kernel_size,
            self.strides,
            padding=self.padding,
            use_bias=False,
            precision=self.precision,
            name="conv",
        )(x)
        return nn.relu(_FrozenBatchNorm(name="bn")(x))


def _pad(h: int, w: int):
    return ((h, h), (w, w))


def _avg_pool_3x3(x):
    # TF's average pool (and pytorch-fid's patch) leaves the padded zeros out of the mean.
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=_pad(1, 1), count_include_pad=False)


class _InceptionA(nn.Module):
    pool_features: int
    precision: Any

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(_ConvBN, precision=self.precision)
        b1 = conv(64, (1, 1), name="branch1x1")(x)
        b5 = conv(48, (1, 1), name="branch5x5_1")(x)
        b5 = conv(64, (5, 5), padding=_pad(2, 2), name="branch5x5_2")(b5)
        b3 = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = conv(96, (3, 3), padding=_pad(1, 1), name="branch3x3dbl_2")(b3)
        b3 = conv(96, (3, 3), padding=_pad(1, 1), name="branch3x3dbl_3")(b3)
        bp = conv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class _InceptionB(nn.Module):
    precision: Any

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(_ConvBN, precision=self.precision)
        b3 = conv(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
        bd = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = conv(96, (3, 3), padding=_pad(1, 1), name="branch3x3dbl_2")(bd)
        bd = conv(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(bd)
        bp = nn.max_pool(x, (3, 3), strides=(2, 2))
        return jnp.concatenate([b3, bd, bp], axis=-1)


class _InceptionC(nn.Module):
    channels_7x7: int
    precision: Any

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(_ConvBN, precision=self.precision)
        c = self.channels_7x7
        b1 = conv(192, (1, 1), name="branch1x1")(x)
        b7 = conv(c, (1, 1), name="branch7x7_1")(x)
        b7 = conv(c, (1, 7), padding=_pad(0, 3), name="branch7x7_2")(b7)
        b7 = conv(192, (7, 1), padding=_pad(3, 0), name="branch7x7_3")(b7)
        bd = conv(c, (1, 1), name="branch7x7dbl_1")(x)
        bd = conv(c, (7, 1), padding=_pad(3, 0), name="branch7x7dbl_2")(bd)
        bd = conv(c, (1, 7), padding=_pad(0, 3), name="branch7x7dbl_3")(bd)
        bd = conv(c, (7, 1), padding=_pad(3, 0), name="branch7x7dbl_4")(bd)
        bd = conv(192, (1, 7), padding=_pad(0, 3), name="branch7x7dbl_5")(bd)
        bp = conv(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class _InceptionD(nn.Module):
    precision: Any

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(_ConvBN, precision=self.precision)
        b3 = conv(192, (1, 1), name="branch3x3_1")(x)
        b3 = conv(320, (3, 3), strides=(2, 2), name="branch3x3_2")(b3)
        b7 = conv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = conv(192, (1, 7), padding=_pad(0, 3), name="branch7x7x3_2")(b7)
        b7 = conv(192, (7, 1), padding=_pad(3, 0), name="branch7x7x3_3")(b7)
        b7 = conv(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(b7)
        bp = nn.max_pool(x, (3, 3), strides=(2, 2))
        return jnp.concatenate([b3, b7, bp], axis=-1)


class _InceptionE(nn.Module):
    max_pool: bool  # the FID graph's last block (Mixed_7c) max-pools its pool branch
    precision: Any

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(_ConvBN, precision=self.precision)
        b1 = conv(320, (1, 1), name="branch1x1")(x)
        b3 = conv(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate(
            [
                conv(384, (1, 3), padding=_pad(0, 1), name="branch3x3_2a")(b3),
                conv(384, (3, 1), padding=_pad(1, 0), name="branch3x3_2b")(b3),
            ],
            axis=-1,
        )
        bd = conv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = conv(384, (3, 3), padding=_pad(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate(
            [
                conv(384, (1, 3), padding=_pad(0, 1), name="branch3x3dbl_3a")(bd),
                conv(384, (3, 1), padding=_pad(1, 0), name="branch3x3dbl_3b")(bd),
            ],
            axis=-1,
        )
        if self.max_pool:
            pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=_pad(1, 1))
        else:
            pooled = _avg_pool_3x3(x)
        bp = conv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
    """Inception-v3 up to pool3, as in the TF FID graph: (N, H, W, 3) in [-1, 1] -> (N, 2048).

    The architecture of pytorch-fid's `fid_inception_v3` (torchvision's
    Inception3 with the FID patches: average pools exclude padding, Mixed_7c
    max-pools its pool branch). Submodule names are torchvision's, so the
    weights map one to one. Fully convolutional: any H, W ≥ 75 runs, but FID
    is defined at 299×299 (see `inception_preprocess`). Convolutions run at
    HIGHEST precision by default so features do not depend on TF32 defaults.
    """

    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        p = self.precision
        conv = functools.partial(_ConvBN, precision=p)
        x = conv(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)
        x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = conv(64, (3, 3), padding=_pad(1, 1), name="Conv2d_2b_3x3")(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
        x = conv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
        x = _InceptionA(32, p, name="Mixed_5b")(x)
        x = _InceptionA(64, p, name="Mixed_5c")(x)
        x = _InceptionA(64, p, name="Mixed_5d")(x)
        x = _InceptionB(p, name="Mixed_6a")(x)
        x = _InceptionC(128, p, name="Mixed_6b")(x)
        x = _InceptionC(160, p, name="Mixed_6c")(x)
        x = _InceptionC(160, p, name="Mixed_6d")(x)
        x = _InceptionC(192, p, name="Mixed_6e")(x)
        x = _InceptionD(p, name="Mixed_7a")(x)
        x = _InceptionE(max_pool=False, precision=p, name="Mixed_7b")(x)
        x = _InceptionE(max_pool=True, precision=p, name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))  # pool3


@functools.lru_cache(maxsize=1)
def inception_param_shapes() -> dict:
    """Flat {path: ShapeDtypeStruct} of InceptionV3 params, without running anything (read-only)."""
    shapes = jax.eval_shape(InceptionV3().init, jax.random.key(0), jnp.zeros((1, 75, 75, 3)))
    return flax.traverse_util.flatten_dict(shapes["params"])


def init_inception_params(seed: int = 0) -> dict:
    """Random InceptionV3 params (He-scaled kernels, near-identity batch norms), made in numpy.

    For tests and timing only: FID needs the real weights (`load_inception_params`).
    Much faster than `InceptionV3().init`, whose 22M-number RNG program compiles slowly.
    """
    rng = np.random.default_rng(seed)
    flat = {}
    for key_path, spec in inception_param_shapes().items():
        shape, leaf = spec.shape, key_path[-1]
        if leaf == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        elif leaf in ("scale", "var"):
            value = rng.uniform(0.5, 1.5, shape)
        else:  # bias, mean
            value = 0.1 * rng.standard_normal(shape)
        flat[key_path] = value.astype(np.float32)
    return flax.traverse_util.unflatten_dict(flat)
