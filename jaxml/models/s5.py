"""S5 networks: the residual S5 block, a stack of them, a sequence classifier and the
two-tower retrieval classifier of the LRA Retrieval (AAN) task.

Defaults follow the official S5 command line (6 layers, H 128, state 256, J 8,
ZOH, half_glu1, conj_sym, prenorm BatchNorm with momentum 0.95, no dropout).
A small config for a CPU (e.g. n_layers=4, d_model=64, state_size=64, blocks=4)
trains in seconds per epoch on MNIST-1D.

Inputs: float features (batch, length, C) with `input_encoding="dense"`, or int tokens
(batch, length) with "one_hot" (the official LRA text tasks: one-hot then Dense, done
here as a row lookup of the Dense kernel, same parameters and init) or "embed"
(nn.Embed). `lengths` (batch,) marks the true length of padded sequences: padded steps
are zeroed before each SSM (so they cannot leak, even backwards), kept out of the
BatchNorm statistics (the official code lets them in) and out of the pooling.
BatchNorm keeps its statistics in "batch_stats"; dropout draws from the "dropout" rng.

Recurrent (streaming) mode of a causal model, one input at a time, equal to the
parallel mode step by step (norms in eval mode, no dropout):

    model = S5Classifier(num_classes=10, pooling="mean", bidirectional=False, ...)
    state = model.initial_state(batch_size)            # no parameters needed
    step = jax.jit(lambda s, x_t: model.apply(variables, s, x_t, method="step"))
    for x_t in stream:                                  # x_t: (batch, C) or (batch,) tokens
        state, logp = step(state, x_t)                  # prediction from the prefix so far
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxml.models.dropout import Dropout
from jaxml.ssm.s5 import S5SSM

ACTIVATIONS = ("gelu", "half_glu1", "half_glu2", "full_glu")
NORMS = ("batch", "layer")
POOLINGS = ("mean", "last")
INPUT_ENCODINGS = ("dense", "one_hot", "embed")


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
    def __call__(self, x, timesteps=None, *, mask=None, train: bool = False, ssm_state=None):
        """x (batch, length, H) -> (batch, length, H); `mask` (batch, length) marks valid steps.

        With `ssm_state` (from `initial_state`), x is one time step (batch, H) and the
        result is (new ssm_state, y (batch, H)); see `step`.
        """
        self._check_options()
        H = x.shape[-1]
        stepping = ssm_state is not None
        if self.norm == "batch":
            norm_layer = nn.BatchNorm(
                use_running_average=not train, momentum=self.bn_momentum, name="norm"
            )
            # Padding must not leak into the batch statistics.
            norm = lambda v: norm_layer(v, mask=None if mask is None else mask[..., None])
        else:
            norm = nn.LayerNorm(name="norm")
        # One dropout mask per (sequence, channel), shared across time.
        time_axis = x.ndim - 1 if stepping else x.ndim - 2
        drop = Dropout(self.dropout, broadcast_dims=(time_axis,), deterministic=not train)

        skip = x
        if self.prenorm:
            x = norm(x)
        if mask is not None:
            # Zero inputs keep a zero state, so padded steps change nothing, even
            # for the backward direction of a bidirectional SSM.
            x = jnp.where(mask[..., None], x, 0.0)
        ssm = S5SSM(**ssm_options(self), name="ssm")
        if stepping:
            ssm_state, x = ssm.step(ssm_state, x, timesteps)
        else:
            x = ssm(x, timesteps)

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
        return (ssm_state, x) if stepping else x

    def initial_state(self, batch_size: int) -> jax.Array:
        """Zero SSM state for `step` (needs no parameters)."""
        check_causal(self)
        return S5SSM(**ssm_options(self), parent=None).initial_state(batch_size)

    def step(self, state, x_t, timestep=None):
        """One step in eval mode: (state, x_t (batch, H)) -> (state, y_t (batch, H))."""
        check_causal(self)
        return self(x_t, timestep, ssm_state=state)


SSM_FIELDS = tuple(f.name for f in dataclasses.fields(S5SSM) if f.name not in ("parent", "name"))
LAYER_FIELDS = tuple(
    f.name for f in dataclasses.fields(S5Layer) if f.name not in ("parent", "name")
)


def ssm_options(module) -> dict:
    return {k: getattr(module, k) for k in SSM_FIELDS}


def layer_options(module) -> dict:
    return {k: getattr(module, k) for k in LAYER_FIELDS}


def check_causal(module):
    if module.bidirectional:
        raise ValueError(
            "step mode is causal, but this model is bidirectional (bidirectional=True): its "
            "outputs depend on future inputs. Train with bidirectional=False to stream."
        )


class TokenDense(nn.Module):
    """Dense(features) of one-hot tokens, as a lookup: kernel[tokens] + bias.

    Same parameters and init as the official one-hot -> nn.Dense (lecun_normal, fan-in =
    vocab_size), without materialising (batch, length, vocab) one-hot arrays."""

    vocab_size: int
    features: int

    @nn.compact
    def __call__(self, tokens):
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (self.vocab_size, self.features)
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return jnp.take(kernel, jnp.asarray(tokens, jnp.int32), axis=0) + bias


class S5Encoder(S5Layer):
    """Input encoder (Dense, one-hot Dense or Embed to d_model), then `n_layers` S5Layers
    (all S5Layer options apply to each).

    Attributes:
      d_model, n_layers: width H and depth.
      input_encoding: "dense" (float features), "one_hot" or "embed" (int tokens).
      vocab_size: number of token ids (for "one_hot" / "embed").
    """

    d_model: int = 128
    n_layers: int = 6
    input_encoding: str = "dense"
    vocab_size: int | None = None

    def setup(self):
        if self.input_encoding not in INPUT_ENCODINGS:
            raise ValueError(
                f"Unknown input_encoding {self.input_encoding!r}; expected one of "
                f"{INPUT_ENCODINGS}."
            )
        if self.input_encoding == "dense":
            self.encoder = nn.Dense(self.d_model)
        else:
            if not self.vocab_size or self.vocab_size < 1:
                raise ValueError(
                    f"input_encoding={self.input_encoding!r} needs a positive vocab_size, "
                    f"got {self.vocab_size}."
                )
            if self.input_encoding == "one_hot":
                self.encoder = TokenDense(self.vocab_size, self.d_model)
            else:
                self.encoder = nn.Embed(self.vocab_size, self.d_model)
        self.layers = [S5Layer(**layer_options(self)) for _ in range(self.n_layers)]

    def _check_input(self, x, stepping: bool):
        tokens = self.input_encoding != "dense"
        want = (1 if tokens else 2) + (0 if stepping else 1)
        if x.ndim != want:
            shape = ("(batch" + ("" if stepping else ", length")) + ("" if tokens else ", features")
            raise ValueError(
                f"S5Encoder with input_encoding={self.input_encoding!r} expects {shape}), "
                f"got shape {x.shape}."
            )

    def __call__(self, x, timesteps=None, *, lengths=None, train: bool = False):
        """x (batch, length, features) or int tokens (batch, length) -> (batch, length, d_model)."""
        self._check_input(x, stepping=False)
        mask = length_mask(lengths, x.shape[1])
        x = self.encoder(x)
        for layer in self.layers:
            x = layer(x, timesteps, mask=mask, train=train)
        return x

    def initial_state(self, batch_size: int) -> tuple:
        """Per-layer zero SSM states for `step` (needs no parameters)."""
        check_causal(self)
        layer = S5Layer(**layer_options(self), parent=None)
        return tuple(layer.initial_state(batch_size) for _ in range(self.n_layers))

    def step(self, state: tuple, x_t, timestep=None):
        """(state, x_t (batch, features) or tokens (batch,)) -> (state, h_t (batch, d_model))."""
        check_causal(self)
        self._check_input(x_t, stepping=True)
        h = self.encoder(x_t)
        new_state = []
        for layer, layer_state in zip(self.layers, state, strict=True):
            layer_state, h = layer(h, timestep, ssm_state=layer_state)
            new_state.append(layer_state)
        return tuple(new_state), h


def pool(h, lengths, pooling: str):
    """(batch, length, H) -> (batch, H): mean over the valid steps, or the last valid step."""
    length = h.shape[1]
    if pooling == "mean":
        if lengths is None:
            return jnp.mean(h, axis=1)
        mask = length_mask(lengths, length)
        h = jnp.sum(jnp.where(mask[..., None], h, 0.0), axis=1)
        return h / jnp.maximum(jnp.asarray(lengths, h.dtype), 1.0)[:, None]
    if lengths is None:
        return h[:, -1]
    last = jnp.clip(jnp.asarray(lengths, jnp.int32) - 1, 0, length - 1)
    return jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0]


def _encoder_options(module) -> dict:
    names = LAYER_FIELDS + ("d_model", "n_layers", "input_encoding", "vocab_size")
    return {k: getattr(module, k) for k in names}


class S5Classifier(S5Encoder, kw_only=True):
    """S5 sequence classifier: S5Encoder -> pooling over time -> Dense -> log-probabilities.

    Attributes:
      num_classes: number of classes (required).
      pooling: "mean" (over the valid steps) or "last" (the last valid step).
      All S5Encoder / S5Layer / S5SSM options (d_model, n_layers, state_size, ...).
    """

    num_classes: int
    pooling: str = "mean"

    def setup(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"Unknown pooling {self.pooling!r}; expected one of {POOLINGS}.")
        self.encoder = S5Encoder(**_encoder_options(self))
        self.decoder = nn.Dense(self.num_classes)

    def __call__(self, x, lengths=None, train: bool = False, timesteps=None):
        """x (batch, length, features) float or (batch, length) tokens -> log-probs
        (batch, num_classes).

        lengths: optional (batch,) true lengths of padded sequences.
        timesteps: optional (batch, length) sampling intervals (see S5SSM).
        """
        h = self.encoder(x, timesteps, lengths=lengths, train=train)
        return nn.log_softmax(self.decoder(pool(h, lengths, self.pooling)), axis=-1)

    def initial_state(self, batch_size: int) -> dict:
        """Streaming state: per-layer SSM states, the running sum of features and the count."""
        check_causal(self)
        encoder = S5Encoder(**_encoder_options(self), parent=None)
        return {
            "layers": encoder.initial_state(batch_size),
            "sum": jnp.zeros((batch_size, self.d_model), jnp.float32),
            "count": jnp.zeros((batch_size,), jnp.float32),
        }

    def step(self, state: dict, x_t, timestep=None):
        """(state, x_t) -> (state, log-probs of the prefix seen so far (batch, num_classes)):
        what `__call__` gives for the sequence x[:, :t+1] (eval mode)."""
        layers, h = self.encoder.step(state["layers"], x_t, timestep)
        total, count = state["sum"] + h, state["count"] + 1.0
        pooled = total / count[:, None] if self.pooling == "mean" else h
        logp = nn.log_softmax(self.decoder(pooled), axis=-1)
        return {"layers": layers, "sum": total, "count": count}, logp


class S5RetrievalClassifier(S5Encoder, kw_only=True):
    """Two-tower document matching (LRA Retrieval / AAN), as the official S5 code: both
    documents go through one shared S5Encoder, each is mean-pooled over its true length,
    and the features [a, b, a − b, a·b] go through Dense(d_model) -> gelu -> Dense(classes).

    Inputs: tokens (batch, 2, length), lengths (batch, 2).
    """

    num_classes: int

    def setup(self):
        self.encoder = S5Encoder(**_encoder_options(self))
        self.mlp = nn.Dense(self.d_model)
        self.decoder = nn.Dense(self.num_classes)

    def __call__(self, x, lengths=None, train: bool = False, timesteps=None):
        if x.ndim < 2 or x.shape[1] != 2:
            raise ValueError(
                f"S5RetrievalClassifier expects two documents per example (batch, 2, length"
                f"[, features]), got shape {x.shape}."
            )
        batch = x.shape[0]
        both = x.reshape(2 * batch, *x.shape[2:])  # the two towers share weights and statistics
        flat_lengths = None if lengths is None else jnp.asarray(lengths).reshape(2 * batch)
        flat_steps = None if timesteps is None else jnp.reshape(timesteps, (2 * batch, -1))
        h = self.encoder(both, flat_steps, lengths=flat_lengths, train=train)
        pooled = pool(h, flat_lengths, "mean").reshape(batch, 2, -1)
        a, b = pooled[:, 0], pooled[:, 1]
        features = jnp.concatenate([a, b, a - b, a * b], axis=-1)
        logits = self.decoder(nn.gelu(self.mlp(features)))
        return nn.log_softmax(logits, axis=-1)
