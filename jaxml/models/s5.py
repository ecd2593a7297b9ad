"""S5 networks: the residual S5 block, a stack of them, and a sequence classifier.

Defaults follow the official S5 command line (6 layers, H 128, state 256, J 8,
ZOH, half_glu1, conj_sym, prenorm BatchNorm with momentum 0.95, no dropout).
A small config for a CPU (e.g. n_layers=4, d_model=64, state_size=64, blocks=4)
trains in seconds per epoch on MNIST-1D.

Shapes: inputs (batch, length, features); `lengths` (batch,) marks the true
length of each padded sequence. BatchNorm keeps its statistics in the
"batch_stats" collection; dropout draws from the "dropout" rng.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxml.ssm.s5 import S5SSM

ACTIVATIONS = ("gelu", "half_glu1", "half_glu2", "full_glu")
NORMS = ("batch", "layer")
POOLINGS = ("mean", "last")


def length_mask(lengths: jax.Array | None, length: int) -> jax.Array | None:
    """(batch, length) bool mask of the valid steps, or None when there is no padding."""
    if lengths is None:
        return None
    return jnp.arange(length) < jnp.asarray(lengths)[:, None]


class S5Layer(nn.Module):
    """One residual S5 block: [norm] -> S5SSM -> activation/dropout -> + skip -> [norm].

    Attributes:
      state_size ... scan_impl: passed to `S5SSM` (see there).
      activation: "gelu", "half_glu1" (x = gelu(x); x·σ(Wx)), "half_glu2"
        (x·σ(W gelu(x))) or "full_glu" (W₁x·σ(W₂x) after gelu).
      dropout: rate; the mask is shared over time (one per sequence and channel).
      prenorm: normalize the block input (True) or the residual sum (False).
      norm: "batch" (BatchNorm over batch and time) or "layer" (LayerNorm).
      bn_momentum: BatchNorm running-average momentum.
    """

    # S5SSM options.
    state_size: int = 256
    blocks: int = 8
    conj_sym: bool = True
    C_init: str = "trunc_standard_normal"
    discretization: str = "zoh"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    clip_eigs: bool = False
    bidirectional: bool = False
    step_rescale: float = 1.0
    scan_impl: str = "auto"
    # Block options.
    activation: str = "half_glu1"
    dropout: float = 0.0
    prenorm: bool = True
    norm: str = "batch"
    bn_momentum: float = 0.95

    def _check_options(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"Unknown activation {self.activation!r}; expected one of {ACTIVATIONS}."
            )
        if self.norm not in NORMS:
            raise ValueError(f"Unknown norm {self.norm!r}; expected one of {NORMS}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")

    @nn.compact
    def __call__(self, x, timesteps=None, *, mask=None, train: bool = False):
        """x (batch, length, H) -> (batch, length, H); `mask` (batch, length) marks valid steps."""
        self._check_options()
        H = x.shape[-1]
        if self.norm == "batch":
            norm_layer = nn.BatchNorm(
                use_running_average=not train, momentum=self.bn_momentum, name="norm"
            )
            # Padding must not leak into the batch statistics.
            norm = lambda v: norm_layer(v, mask=None if mask is None else mask[..., None])
        else:
            norm = nn.LayerNorm(name="norm")
        # One dropout mask per (sequence, channel), shared across time.
        drop = nn.Dropout(self.dropout, broadcast_dims=(x.ndim - 2,), deterministic=not train)

        skip = x
        if self.prenorm:
            x = norm(x)
        if mask is not None:
            # Zero inputs keep a zero state, so padded steps change nothing, even
            # for the backward direction of a bidirectional SSM.
            x = jnp.where(mask[..., None], x, 0.0)
        x = S5SSM(**ssm_options(self), name="ssm")(x, timesteps)

        if self.activation == "gelu":
            x = drop(nn.gelu(x))
        elif self.activation == "half_glu1":
            x = drop(nn.gelu(x))
            x = x * jax.nn.sigmoid(nn.Dense(H, name="out2")(x))
            x = drop(x)
        elif self.activation == "half_glu2":
            x1 = drop(nn.gelu(x))  # only the gate sees the GELU
            x = x * jax.nn.sigmoid(nn.Dense(H, name="out2")(x1))
            x = drop(x)
        else:  # full_glu
            x = drop(nn.gelu(x))
            x = nn.Dense(H, name="out1")(x) * jax.nn.sigmoid(nn.Dense(H, name="out2")(x))
            x = drop(x)

        x = skip + x
        if not self.prenorm:
            x = norm(x)
        return x


SSM_FIELDS = tuple(f.name for f in dataclasses.fields(S5SSM) if f.name not in ("parent", "name"))
LAYER_FIELDS = tuple(
    f.name for f in dataclasses.fields(S5Layer) if f.name not in ("parent", "name")
)


def ssm_options(module) -> dict:
    return {k: getattr(module, k) for k in SSM_FIELDS}


def layer_options(module) -> dict:
    return {k: getattr(module, k) for k in LAYER_FIELDS}


class S5Encoder(S5Layer):
    """Dense(d_model) encoder, then `n_layers` S5Layers (all S5Layer options apply to each)."""

    d_model: int = 128
    n_layers: int = 6

    @nn.compact
    def __call__(self, x, timesteps=None, *, lengths=None, train: bool = False):
        """x (batch, length, features) -> (batch, length, d_model)."""
        if x.ndim != 3:
            raise ValueError(f"S5Encoder expects (batch, length, features), got shape {x.shape}.")
        mask = length_mask(lengths, x.shape[1])
        x = nn.Dense(self.d_model, name="encoder")(x)
        for i in range(self.n_layers):
            x = S5Layer(**layer_options(self), name=f"layers_{i}")(
                x, timesteps, mask=mask, train=train
            )
        return x


class S5Classifier(S5Encoder, kw_only=True):
    """S5 sequence classifier: S5Encoder -> pooling over time -> Dense -> log-probabilities.

    Attributes:
      num_classes: number of classes (required).
      pooling: "mean" (over the valid steps) or "last" (the last valid step).
      All S5Encoder / S5Layer / S5SSM options (d_model, n_layers, state_size, ...).
    """

    num_classes: int
    pooling: str = "mean"

    @nn.compact
    def __call__(self, x, lengths=None, train: bool = False, timesteps=None):
        """x (batch, length, features) float -> log-probs (batch, num_classes).

        lengths: optional (batch,) true lengths of padded sequences.
        timesteps: optional (batch, length) sampling intervals (see S5SSM).
        """
        if self.pooling not in POOLINGS:
            raise ValueError(f"Unknown pooling {self.pooling!r}; expected one of {POOLINGS}.")
        encoder_options = {k: getattr(self, k) for k in LAYER_FIELDS + ("d_model", "n_layers")}
        h = S5Encoder(**encoder_options, name="encoder")(x, timesteps, lengths=lengths, train=train)

        length = h.shape[1]
        if self.pooling == "mean":
            if lengths is None:
                h = jnp.mean(h, axis=1)
            else:
                mask = length_mask(lengths, length)
                h = jnp.sum(jnp.where(mask[..., None], h, 0.0), axis=1)
                h = h / jnp.maximum(jnp.asarray(lengths, h.dtype), 1.0)[:, None]
        else:
            if lengths is None:
                h = h[:, -1]
            else:
                last = jnp.clip(jnp.asarray(lengths, jnp.int32) - 1, 0, length - 1)
                h = jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0]
        logits = nn.Dense(self.num_classes, name="decoder")(h)
        return nn.log_softmax(logits, axis=-1)
