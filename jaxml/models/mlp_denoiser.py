"""A small residual MLP denoiser network for 2-D / low-dimensional data.

The counterpart of `UNet` for toy distributions (two moons, Gaussian
mixtures, ...): the same call signature F(x_in, c_noise, labels), so the same
EDM / PFGM++ preconditioning, losses and samplers apply unchanged.

Architecture: noise embedding (positional or Fourier) of c_noise, plus an
optional class embedding, mapped by a Dense+SiLU layer; an input projection;
`depth` pre-norm residual blocks (LayerNorm, SiLU, Dense, + embedding, SiLU,
[dropout], Dense) and a LayerNorm+SiLU+Dense output layer initialised near
zero, so the network starts close to F = 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxml.models.dropout import Dropout
from jaxml.models.unet import EMBEDDING_TYPES, class_input, fourier_embedding, positional_embedding

Array = jax.Array

_init_zero = nn.initializers.variance_scaling(1e-10, "fan_avg", "uniform")


class MLPDenoiser(nn.Module):
    """Residual MLP F(x, c_noise, labels): x (B, D), c_noise (B,) or scalar -> (B, D_out).

    Attributes:
      hidden: width of the hidden layers.
      depth: number of residual blocks.
      noise_channels: width of the noise embedding.
      embedding_type: "positional" or "fourier" (scale `fourier_scale`).
      dropout: dropout rate inside the blocks (train=True, "dropout" rng).
      num_classes: 0 for unconditional, else the number of classes; labels are
        (B,) ints, and an out-of-range label (e.g. -1) or labels=None is the
        null class.
      label_dropout: probability (train=True) of replacing a label by the null
        class, for classifier-free guidance.
      out_features: output width D_out; None keeps D.
    """

    hidden: int = 128
    depth: int = 3
    noise_channels: int = 64
    embedding_type: str = "positional"
    fourier_scale: float = 16.0
    dropout: float = 0.0
    num_classes: int = 0
    label_dropout: float = 0.0
    out_features: int | None = None

    @nn.compact
    def __call__(
        self, x: Array, c_noise: Array, labels: Array | None = None, *, train: bool = False
    ) -> Array:
        if self.embedding_type not in EMBEDDING_TYPES:
            raise ValueError(
                f"embedding_type must be one of {EMBEDDING_TYPES}, got {self.embedding_type!r}."
            )
        if self.hidden < 1 or self.depth < 0 or self.noise_channels < 2 or self.noise_channels % 2:
            raise ValueError(
                "hidden must be >= 1, depth >= 0 and noise_channels even and >= 2; "
                f"got {self.hidden}, {self.depth}, {self.noise_channels}."
            )
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.label_dropout <= 1.0:
            raise ValueError(
                f"dropout must be in [0, 1) and label_dropout in [0, 1]; got "
                f"{self.dropout} and {self.label_dropout}."
            )
        if self.label_dropout > 0 and self.num_classes == 0:
            raise ValueError("label_dropout needs a class-conditional model (num_classes > 0).")
        if x.ndim != 2:
            raise ValueError(f"MLPDenoiser expects x of shape (batch, features), got {x.shape}.")
        c_noise = jnp.asarray(c_noise)
        if c_noise.ndim == 0:  # one noise level for the whole batch
            c_noise = jnp.broadcast_to(c_noise, x.shape[:1])
        if c_noise.shape != x.shape[:1]:
            raise ValueError(
                f"c_noise must have shape (batch,) = {x.shape[:1]}, got {c_noise.shape}."
            )
        if labels is not None and self.num_classes == 0:
            raise ValueError("labels were given to an unconditional MLPDenoiser (num_classes=0).")

        batch = x.shape[0]
        if self.embedding_type == "positional":
            emb = positional_embedding(c_noise, self.noise_channels)
        else:
            emb = fourier_embedding(c_noise, self.noise_channels, self.fourier_scale)
        if self.num_classes:
            if labels is not None and jnp.shape(labels) != (batch,):
                raise ValueError(
                    f"labels must have shape (batch,) = ({batch},), got {jnp.shape(labels)}."
                )
            rng = self.make_rng("dropout") if train and self.label_dropout > 0 else None
            onehot = class_input(labels, self.num_classes, batch, self.label_dropout, rng)
            emb = emb + nn.Dense(self.noise_channels, name="map_label")(onehot)
        emb = nn.silu(nn.Dense(self.hidden, name="map_noise")(emb))

        h = nn.Dense(self.hidden, name="in_proj")(x.astype(jnp.float32))
        for i in range(self.depth):
            r = nn.silu(nn.LayerNorm(name=f"block{i}_norm")(h))
            r = nn.Dense(self.hidden, name=f"block{i}_dense0")(r)
            r = nn.silu(r + nn.Dense(self.hidden, name=f"block{i}_emb")(emb))
            r = Dropout(self.dropout, deterministic=not train)(r)
            h = h + nn.Dense(self.hidden, name=f"block{i}_dense1")(r)
        h = nn.silu(nn.LayerNorm(name="out_norm")(h))
        out = nn.Dense(self.out_features or x.shape[-1], kernel_init=_init_zero, name="out")(h)
        return out.astype(x.dtype)


class ImageMLPDenoiser(nn.Module):
    """MLPDenoiser on images (`config.model.name="mlp"`): (B, H, W, C) flattened to (B, H·W·C)
    and back. A tiny, fast alternative to the U-Net for 8×8 digits and for tests."""

    hidden: int = 128
    depth: int = 3
    noise_channels: int = 64
    embedding_type: str = "positional"
    fourier_scale: float = 16.0
    dropout: float = 0.0
    num_classes: int = 0
    label_dropout: float = 0.0

    @nn.compact
    def __call__(
        self, x: Array, c_noise: Array, labels: Array | None = None, *, train: bool = False
    ) -> Array:
        mlp = MLPDenoiser(
            hidden=self.hidden,
            depth=self.depth,
            noise_channels=self.noise_channels,
            embedding_type=self.embedding_type,
            fourier_scale=self.fourier_scale,
            dropout=self.dropout,
            num_classes=self.num_classes,
            label_dropout=self.label_dropout,
            name="mlp",
        )
        return mlp(x.reshape(x.shape[0], -1), c_noise, labels, train=train).reshape(x.shape)
