"""DDPM++ U-Net (EDM's `SongUNet`, Karras et al. 2022) in flax.linen, NHWC.

The network F(x_in, c_noise, labels) that the EDM / PFGM++ preconditioning
wraps into a denoiser. It follows NVlabs/edm `training/networks.py` with the
DDPM++ settings (standard encoder and decoder, positional noise embedding):

- mapping: noise embedding of c_noise (+ class embedding) -> two Dense+SiLU
  layers of width `model_channels * channel_mult_emb`;
- encoder: a 3x3 conv, then per resolution a downsampling residual block (not
  at the first) and `num_blocks` residual blocks, self-attention at the
  resolutions listed in `attn_resolutions`;
- decoder: two blocks at the lowest resolution (the first always with
  attention), then per resolution an upsampling block (not at the lowest) and
  `num_blocks + 1` blocks that each take one encoder skip (concatenated);
- output: GroupNorm + SiLU + 3x3 conv initialised near zero.

Residual block: GroupNorm, SiLU, [resample], 3x3 conv; the embedding enters as
a bias before the second GroupNorm (DDPM++) or as scale/shift after it
(`adaptive_scale=True`); SiLU, dropout, 3x3 conv (near-zero init); the sum
with the skip path and the attention output are scaled by 1/sqrt(2).

Resampling is a 2x2 average pool down and nearest-neighbour up. That is
exactly what EDM's DDPM++ does (its resample filter is [1,1]); the NCSN++
[1,3,3,1] FIR filter is not implemented.

Shapes: x (B, H, W, C) float, c_noise (B,) or scalar, labels (B,) int or None
-> (B, H, W, out_channels or C) in x's dtype.
An integer label outside [0, num_classes) (e.g. -1) or labels=None is the
"null" class of classifier-free guidance, the same as a dropped label.
Dropout and label dropout draw from the "dropout" rng when train=True.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxml.models.attention import attention_impls, dot_product_attention
from jaxml.models.dropout import Dropout
from jaxml.models.fused_layers import Dense, GroupNormAct, materialized_cotangent

Array = jax.Array

EMBEDDING_TYPES = ("positional", "fourier")

# EDM's initialisations for SongUNet: xavier-uniform everywhere, the last conv
# of each residual branch (and the network output) scaled by 1e-5, so every
# block starts close to the identity, and the attention qkv by sqrt(0.2).
_init = nn.initializers.xavier_uniform()
_init_zero = nn.initializers.variance_scaling(1e-10, "fan_avg", "uniform")
_init_attn = nn.initializers.variance_scaling(0.2, "fan_avg", "uniform")


def num_groups(channels: int, max_groups: int = 32, min_channels_per_group: int = 4) -> int:
    """EDM's GroupNorm group count min(32, C // 4), lowered until it divides C."""
    groups = max(1, min(max_groups, channels // min_channels_per_group))
    while channels % groups:
        groups -= 1
    return groups


def _group_norm(channels: int, eps: float, dtype, name: str, act: bool = True) -> GroupNormAct:
    """GroupNorm (+ optional per-sample scale/shift) + SiLU in one op with a closed-form
    backward (jaxml/models/fused_layers.py); the parameters are flax GroupNorm's."""
    return GroupNormAct(
        num_groups=num_groups(channels), epsilon=eps, act=act, dtype=dtype, name=name
    )


def downsample(x: Array) -> Array:
    """2x average pool (EDM's [1,1] resample filter)."""
    return nn.avg_pool(x, (2, 2), strides=(2, 2))


def upsample(x: Array) -> Array:
    """2x nearest-neighbour upsampling (EDM's [1,1] transposed resample filter)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def positional_embedding(
    x: Array, num_channels: int, max_positions: int = 10000, endpoint: bool = True
) -> Array:
    """Transformer-style sinusoidal embedding of a (B,) array -> (B, num_channels), [sin, cos]."""
    half = num_channels // 2
    freqs = jnp.arange(half, dtype=jnp.float32) / max(half - (1 if endpoint else 0), 1)
    freqs = (1.0 / max_positions) ** freqs
    args = x.astype(jnp.float32)[:, None] * freqs[None, :]
    # EDM swaps the halves after the mapping ([cos, sin] -> [sin, cos]).
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


def fourier_embedding(x: Array, num_channels: int, scale: float = 16.0, seed: int = 0) -> Array:
    """Random Fourier features (NCSN++) of a (B,) array -> (B, num_channels), [sin, cos].

    EDM draws the frequencies once and keeps them in a buffer; here they come
    from a fixed key, so they are a compile-time constant and need no state.
    """
    freqs = jax.random.normal(jax.random.PRNGKey(seed), (num_channels // 2,)) * scale
    args = x.astype(jnp.float32)[:, None] * (2 * math.pi * freqs)[None, :]
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


def class_input(
    labels: Array | None,
    num_classes: int,
    batch: int,
    drop_rate: float = 0.0,
    rng: Array | None = None,
) -> Array:
    """EDM's class input: sqrt(num_classes)·one_hot(labels), (batch, num_classes).

    The null class (labels=None, an out-of-range label such as -1, or a label
    dropped with probability `drop_rate` when `rng` is given) is the all-zero
    row, so its embedding is the bias of the layer that follows.
    """
    if labels is None:
        return jnp.zeros((batch, num_classes), jnp.float32)
    onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if rng is not None and drop_rate > 0:
        onehot = onehot * (jax.random.uniform(rng, (batch, 1)) >= drop_rate)
    return onehot * math.sqrt(num_classes)


class UNetBlock(nn.Module):
    """Residual block with optional 2x up/down-sampling and single-/multi-head self-attention."""

    out_channels: int
    up: bool = False
    down: bool = False
    attention: bool = False
    num_heads: int = 1
    dropout: float = 0.0
    skip_scale: float = 1.0
    adaptive_scale: bool = False
    eps: float = 1e-6
    attn_impl: str = "default"
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, emb: Array, *, train: bool = False) -> Array:
        in_channels = x.shape[-1]
        out_channels = self.out_channels
        resample = upsample if self.up else downsample if self.down else (lambda t: t)
        conv = lambda c, k, init, name: (
            lambda t: materialized_cotangent(
                nn.Conv(c, (k, k), padding="SAME", kernel_init=init, dtype=self.dtype, name=name)(t)
            )
        )
        # 1x1 convolutions as Dense layers over the channel axis: the same math
        # and fan-in/fan-out, but a plain matmul that XLA compiles and runs faster.
        proj = lambda c, init, name: (
            lambda t: materialized_cotangent(
                Dense(c, kernel_init=init, dtype=self.dtype, name=name)(t)
            )
        )

        orig = x
        x = _group_norm(in_channels, self.eps, self.dtype, "norm0")(x)
        x = conv(out_channels, 3, _init, "conv0")(resample(x))

        params = Dense(
            out_channels * (2 if self.adaptive_scale else 1),
            kernel_init=_init,
            dtype=self.dtype,
            name="affine",
        )(emb)[:, None, None, :]
        norm1 = _group_norm(out_channels, self.eps, self.dtype, "norm1")
        if self.adaptive_scale:
            scale, shift = jnp.split(params, 2, axis=-1)
            x = norm1(x, scale, shift)
        else:
            x = norm1(x + params)
        x = Dropout(self.dropout, deterministic=not train)(x)
        x = conv(out_channels, 3, _init_zero, "conv1")(x)

        skip = orig
        if out_channels != in_channels or self.up or self.down:
            # EDM's resample_proj=True: the skip path always gets a 1x1 projection.
            skip = proj(out_channels, _init, "skip")(resample(orig))
        x = (x + skip) * self.skip_scale

        if self.attention:
            b, h, w, c = x.shape
            qkv = proj(3 * c, _init_attn, "qkv")(
                _group_norm(c, self.eps, self.dtype, "norm2", act=False)(x)
            )
            qkv = qkv.reshape(b, h * w, 3, self.num_heads, c // self.num_heads)
            a = dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], impl=self.attn_impl)
            a = proj(c, _init_zero, "proj")(a.reshape(b, h, w, c))
            x = (a + x) * self.skip_scale
        return x


class UNet(nn.Module):
    """DDPM++ U-Net (EDM SongUNet); see the module docstring.

    Attributes:
      model_channels: base channel count; level i has model_channels * channel_mult[i].
      channel_mult: per-resolution multipliers; the input is downsampled
        len(channel_mult) - 1 times, so H and W must be divisible by 2**(that).
      num_blocks: residual blocks per resolution (the decoder has one more).
      attn_resolutions: feature-map heights (H >> level) that get self-attention.
      dropout: dropout rate inside the residual blocks.
      num_classes: 0 for an unconditional model, else the number of classes.
      label_dropout: probability (train=True only) of replacing a label by the
        null class, for classifier-free guidance.
      augment_dim: size of the augmentation labels of `jaxml.diffusion.augment`
        (EDM's non-leaky augmentation: 9 for the CIFAR-10 pipeline); 0 = none.
        They enter the embedding through a bias-free Dense ("map_augment"), so
        absent labels (sampling) are the same as zero labels (no augmentation).
      embedding_type: "positional" (DDPM++) or "fourier" (NCSN++).
      channel_mult_noise: noise embedding width = model_channels * this.
      channel_mult_emb: embedding (mapping MLP) width = model_channels * this.
      fourier_scale: frequency scale of the Fourier embedding.
      adaptive_scale: embedding as scale/shift after GroupNorm (True) or as a
        bias before it (False, DDPM++).
      num_heads: attention heads (EDM's DDPM++ uses one head over all channels).
      skip_scale: factor after each residual / attention sum (EDM: sqrt(0.5)).
      out_channels: output channels; None keeps the input's channel count.
      attn_impl: `jaxml.models.attention` implementation name.
      dtype: computation dtype (e.g. jnp.bfloat16); params stay float32 and
        the output is cast back to x's dtype.
    """

    model_channels: int = 128
    channel_mult: Sequence[int] = (2, 2, 2)
    num_blocks: int = 4
    attn_resolutions: Sequence[int] = (16,)
    dropout: float = 0.10
    num_classes: int = 0
    label_dropout: float = 0.0
    augment_dim: int = 0
    embedding_type: str = "positional"
    channel_mult_noise: int = 1
    channel_mult_emb: int = 4
    fourier_scale: float = 16.0
    adaptive_scale: bool = False
    num_heads: int = 1
    skip_scale: float = math.sqrt(0.5)
    out_channels: int | None = None
    attn_impl: str = "default"
    dtype: Any = None

    def _check_options(self, x: Array, c_noise: Array, labels: Array | None) -> None:
        if self.embedding_type not in EMBEDDING_TYPES:
            raise ValueError(
                f"embedding_type must be one of {EMBEDDING_TYPES}, got {self.embedding_type!r}."
            )
        if len(self.channel_mult) == 0 or any(m < 1 for m in self.channel_mult):
            raise ValueError(
                f"channel_mult must be a non-empty tuple of positive ints, "
                f"got {tuple(self.channel_mult)}."
            )
        if self.model_channels < 1 or self.num_blocks < 1:
            raise ValueError(
                f"model_channels and num_blocks must be >= 1, got "
                f"{self.model_channels} and {self.num_blocks}."
            )
        if (self.model_channels * self.channel_mult_noise) % 2:
            raise ValueError(
                "The noise embedding width model_channels * channel_mult_noise "
                f"must be even, got {self.model_channels * self.channel_mult_noise}."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        if not 0.0 <= self.label_dropout <= 1.0:
            raise ValueError(f"label_dropout must be in [0, 1], got {self.label_dropout}.")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}.")
        if self.augment_dim < 0:
            raise ValueError(f"augment_dim must be >= 0, got {self.augment_dim}.")
        if self.label_dropout > 0 and self.num_classes == 0:
            raise ValueError("label_dropout needs a class-conditional model (num_classes > 0).")
        if self.attn_impl not in attention_impls():
            raise ValueError(
                f"Unknown attn_impl {self.attn_impl!r}; choose one of {sorted(attention_impls())}."
            )
        if x.ndim != 4:
            raise ValueError(f"UNet expects NHWC images (B, H, W, C), got shape {x.shape}.")
        if c_noise.shape != x.shape[:1]:
            raise ValueError(
                f"c_noise must have shape (batch,) = {x.shape[:1]}, got {c_noise.shape}."
            )
        factor = 2 ** (len(self.channel_mult) - 1)
        height, width = x.shape[1:3]
        if height % factor or width % factor:
            raise ValueError(
                f"Input resolution {height}x{width} cannot be downsampled "
                f"{len(self.channel_mult) - 1} times (len(channel_mult) - 1): H and W must be "
                f"divisible by {factor}. Use fewer channel_mult entries or pad the images."
            )
        for level, mult in enumerate(self.channel_mult):
            channels = self.model_channels * mult
            if (height >> level) in self.attn_resolutions or level == len(self.channel_mult) - 1:
                if channels % self.num_heads:
                    raise ValueError(
                        f"num_heads={self.num_heads} does not divide the "
                        f"{channels} channels of an attention layer."
                    )
        if labels is not None:
            if self.num_classes == 0:
                raise ValueError("labels were given to an unconditional UNet (num_classes=0).")
            if labels.shape != x.shape[:1] or not jnp.issubdtype(labels.dtype, jnp.integer):
                raise ValueError(
                    f"labels must be (batch,) = {x.shape[:1]} integers, got "
                    f"{labels.dtype} {labels.shape}."
                )

    def _embed(
        self,
        c_noise: Array,
        labels: Array | None,
        batch: int,
        train: bool,
        augment_labels: Array | None = None,
    ) -> Array:
        noise_channels = self.model_channels * self.channel_mult_noise
        emb_channels = self.model_channels * self.channel_mult_emb
        if self.embedding_type == "positional":
            emb = positional_embedding(c_noise, noise_channels, endpoint=True)
        else:
            emb = fourier_embedding(c_noise, noise_channels, self.fourier_scale)

        if self.num_classes:
            rng = self.make_rng("dropout") if train and self.label_dropout > 0 else None
            onehot = class_input(labels, self.num_classes, batch, self.label_dropout, rng)
            emb = emb + Dense(
                noise_channels, kernel_init=_init, dtype=self.dtype, name="map_label"
            )(onehot)

        if self.augment_dim:
            if augment_labels is None:
                augment_labels = jnp.zeros((batch, self.augment_dim), jnp.float32)
            if augment_labels.shape != (batch, self.augment_dim):
                raise ValueError(
                    f"augment_labels must be (batch, augment_dim) = {(batch, self.augment_dim)}, "
                    f"got {augment_labels.shape}."
                )
            emb = emb + Dense(
                noise_channels,
                use_bias=False,
                kernel_init=_init,
                dtype=self.dtype,
                name="map_augment",
            )(augment_labels.astype(jnp.float32))
        elif augment_labels is not None:
            raise ValueError("augment_labels were given to a UNet with augment_dim=0.")

        emb = nn.silu(
            Dense(emb_channels, kernel_init=_init, dtype=self.dtype, name="map_layer0")(emb)
        )
        emb = nn.silu(
            Dense(emb_channels, kernel_init=_init, dtype=self.dtype, name="map_layer1")(emb)
        )
        return emb

    @nn.compact
    def __call__(
        self,
        x: Array,
        c_noise: Array,
        labels: Array | None = None,
        *,
        train: bool = False,
        augment_labels: Array | None = None,
    ) -> Array:
        c_noise = jnp.asarray(c_noise)
        if c_noise.ndim == 0:  # one noise level for the whole batch
            c_noise = jnp.broadcast_to(c_noise, x.shape[:1])
        labels = None if labels is None else jnp.asarray(labels)
        self._check_options(x, c_noise, labels)
        in_dtype = x.dtype
        out_channels = self.out_channels or x.shape[-1]
        resolution = x.shape[1]
        emb = self._embed(c_noise, labels, x.shape[0], train, augment_labels)

        block = lambda c, name, **kw: UNetBlock(
            out_channels=c,
            num_heads=self.num_heads,
            dropout=self.dropout,
            skip_scale=self.skip_scale,
            adaptive_scale=self.adaptive_scale,
            attn_impl=self.attn_impl,
            dtype=self.dtype,
            name=name,
            **kw,
        )

        # Encoder: every output is kept as a skip for the decoder.
        skips = []
        for level, mult in enumerate(self.channel_mult):
            res = resolution >> level
            if level == 0:
                x = nn.Conv(
                    self.model_channels,
                    (3, 3),
                    padding="SAME",
                    kernel_init=_init,
                    dtype=self.dtype,
                    name=f"enc_{res}x{res}_conv",
                )(x)
                x = materialized_cotangent(x)
            else:
                x = block(x.shape[-1], f"enc_{res}x{res}_down", down=True)(x, emb, train=train)
            skips.append(x)
            for idx in range(self.num_blocks):
                x = block(
                    self.model_channels * mult,
                    f"enc_{res}x{res}_block{idx}",
                    attention=res in self.attn_resolutions,
                )(x, emb, train=train)
                skips.append(x)

        # Decoder.
        for level, mult in reversed(list(enumerate(self.channel_mult))):
            res = resolution >> level
            if level == len(self.channel_mult) - 1:
                x = block(x.shape[-1], f"dec_{res}x{res}_in0", attention=True)(x, emb, train=train)
                x = block(x.shape[-1], f"dec_{res}x{res}_in1")(x, emb, train=train)
            else:
                x = block(x.shape[-1], f"dec_{res}x{res}_up", up=True)(x, emb, train=train)
            for idx in range(self.num_blocks + 1):
                x = jnp.concatenate([x, skips.pop()], axis=-1)
                x = block(
                    self.model_channels * mult,
                    f"dec_{res}x{res}_block{idx}",
                    attention=idx == self.num_blocks and res in self.attn_resolutions,
                )(x, emb, train=train)

        x = _group_norm(x.shape[-1], 1e-6, self.dtype, "out_norm")(x)
        x = nn.Conv(
            out_channels,
            (3, 3),
            padding="SAME",
            kernel_init=_init_zero,
            dtype=self.dtype,
            name="out_conv",
        )(x)
        return x.astype(in_dtype)


# Named configurations: keyword arguments of UNet. Step times are one Adam
# step at batch 64 on one core of a small shared CPU (XLA, float32).
UNET_CONFIGS: dict[str, dict[str, Any]] = {
    # EDM's CIFAR-10 DDPM++ (Karras et al. 2022, config F): 55.73M params unconditional.
    "cifar10_ddpmpp": dict(
        model_channels=128,
        channel_mult=(2, 2, 2),
        num_blocks=4,
        attn_resolutions=(16,),
        dropout=0.13,
        embedding_type="positional",
        channel_mult_noise=1,
    ),
    # scikit-learn's 8x8 digits, sized for CPU training: 8x8 -> 4x4, attention at
    # 4x4; 189k params, ~0.1 s per step.
    "digits_small": dict(
        model_channels=16,
        channel_mult=(1, 2),
        num_blocks=1,
        attn_resolutions=(4,),
        dropout=0.1,
        embedding_type="positional",
        channel_mult_noise=1,
    ),
    # The same layout, wider and deeper: 1.03M params, ~0.5 s per step on a CPU.
    "digits_base": dict(
        model_channels=32,
        channel_mult=(1, 2),
        num_blocks=2,
        attn_resolutions=(4,),
        dropout=0.1,
        embedding_type="positional",
        channel_mult_noise=1,
    ),
    # The digits upsampled to 16x16: 16 -> 8 -> 4, attention at 8x8; 317k params,
    # ~0.5 s per step on a CPU.
    "digits16_small": dict(
        model_channels=16,
        channel_mult=(1, 2, 2),
        num_blocks=1,
        attn_resolutions=(8,),
        dropout=0.1,
        embedding_type="positional",
        channel_mult_noise=1,
    ),
}


def unet_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The UNet keyword arguments of a named configuration, with overrides applied.

    E.g. `UNet(**unet_config("digits_small", num_classes=10, label_dropout=0.1))`.
    """
    if name not in UNET_CONFIGS:
        raise ValueError(f"Unknown UNet config {name!r}; choose one of {sorted(UNET_CONFIGS)}.")
    return {**UNET_CONFIGS[name], **overrides}
