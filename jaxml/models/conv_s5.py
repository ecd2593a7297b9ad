"""ConvS5 video model: frame encoder -> residual ConvS5 blocks -> frame decoder.

The model reads frames x_0..x_{T-1} (batch, T, H, W, C) in [0, 1] and returns, at every t,
the logits of frame x_{t+1} (teacher forcing: train on whole sequences in parallel).
Generation conditions on a prefix in parallel mode (`prefill`, which also returns every
layer's last state) and then rolls out one frame at a time (`step`), feeding each
predicted frame back in. Both `ConvS5VideoModel` and `ConvLSTMVideoModel` share this
interface (`__call__`, `prefill`, `step`) and the encoder/decoder defined here.

Blocks follow S5: skip -> LayerNorm (per pixel, over channels, so a frame's
normalisation never looks at other frames) -> ConvS5 -> GELU -> half-GLU (x·σ(Wx), W a
1x1 convolution) -> + skip.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxml.ssm.conv_s5 import ConvS5


def level_features(features: int, level: int, downsample: int) -> int:
    """Channels at resolution level `level` (0 = full): halved per level above the latents,
    so the full-resolution convolutions stay cheap."""
    return max(features >> (downsample - level), 4)


class FrameEncoder(nn.Module):
    """(..., H, W, C) frames -> (..., H/2^d, W/2^d, features): a 3x3 conv, then d stride-2
    3x3 convs doubling the channels up to `features`."""

    features: int
    downsample: int = 1

    @nn.compact
    def __call__(self, x):
        d = self.downsample
        x = nn.gelu(nn.Conv(level_features(self.features, 0, d), (3, 3), name="conv_in")(x))
        for i in range(d):
            width = level_features(self.features, i + 1, d)
            x = nn.gelu(nn.Conv(width, (3, 3), strides=(2, 2), name=f"down_{i}")(x))
        return x


class FrameDecoder(nn.Module):
    """(..., h, w, features) -> (..., h·2^d, w·2^d, channels) logits, mirroring the encoder."""

    features: int
    channels: int
    upsample: int = 1

    @nn.compact
    def __call__(self, x):
        d = self.upsample
        for i in range(d):
            width = level_features(self.features, d - i - 1, d)
            x = nn.gelu(nn.ConvTranspose(width, (3, 3), strides=(2, 2), name=f"up_{i}")(x))
        return nn.Conv(self.channels, (3, 3), name="conv_out")(x)


def check_frames(frames, what: str = "frames"):
    if frames.ndim != 5:
        raise ValueError(
            f"video model {what} must be (batch, time, height, width, channels), "
            f"got shape {tuple(frames.shape)}."
        )


class ConvS5Block(nn.Module):
    """One residual ConvS5 block on (batch, T, h, w, features) (see the module docstring)."""

    features: int
    state_size: int = 32
    blocks: int = 1
    conj_sym: bool = True
    kernel_size_B: int = 3
    kernel_size_C: int = 3
    discretization: str = "zoh"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    clip_eigs: bool = False
    scan_impl: str = "auto"

    def setup(self):
        self.norm = nn.LayerNorm()
        self.ssm = ConvS5(
            state_size=self.state_size,
            blocks=self.blocks,
            conj_sym=self.conj_sym,
            kernel_size_B=self.kernel_size_B,
            kernel_size_C=self.kernel_size_C,
            discretization=self.discretization,
            dt_min=self.dt_min,
            dt_max=self.dt_max,
            clip_eigs=self.clip_eigs,
            scan_impl=self.scan_impl,
        )
        self.gate = nn.Dense(self.features)

    def _activation(self, y):
        y = nn.gelu(y)
        return y * jax.nn.sigmoid(self.gate(y))

    def __call__(self, x, *, reset=None, h0=None):
        """Returns (output, state after the last frame)."""
        y, state = self.ssm(self.norm(x), reset=reset, h0=h0, return_state=True)
        return x + self._activation(y), state

    def step(self, state, x_t):
        state, y = self.ssm.step(state, self.norm(x_t))
        return state, x_t + self._activation(y)


class ConvS5VideoModel(nn.Module):
    """Next-frame model: encoder -> `n_layers` ConvS5 blocks at 1/2^downsample resolution ->
    decoder. Options after `d_model` are the ConvS5 layer's (see `jaxml.ssm.conv_s5`)."""

    channels: int = 1
    d_model: int = 32
    n_layers: int = 2
    downsample: int = 1
    state_size: int = 32
    blocks: int = 1
    conj_sym: bool = True
    kernel_size_B: int = 3
    kernel_size_C: int = 3
    discretization: str = "zoh"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    clip_eigs: bool = False
    scan_impl: str = "auto"

    def setup(self):
        self.encoder = FrameEncoder(self.d_model, self.downsample)
        options = dict(
            state_size=self.state_size,
            blocks=self.blocks,
            conj_sym=self.conj_sym,
            kernel_size_B=self.kernel_size_B,
            kernel_size_C=self.kernel_size_C,
            discretization=self.discretization,
            dt_min=self.dt_min,
            dt_max=self.dt_max,
            clip_eigs=self.clip_eigs,
            scan_impl=self.scan_impl,
        )
        self.layers = [ConvS5Block(self.d_model, **options) for _ in range(self.n_layers)]
        self.decoder = FrameDecoder(self.d_model, self.channels, self.downsample)

    def prefill(self, frames, *, reset=None, states=None):
        """Parallel mode: (logits of the next frames (batch, T, H, W, C), per-layer states).

        `states` (from an earlier `prefill`/`step`) continues a sequence; `reset`
        (batch, T) restarts every layer's state where True."""
        check_frames(frames)
        if frames.shape[-1] != self.channels:
            raise ValueError(
                f"video model was built for {self.channels} channel(s), frames have "
                f"{frames.shape[-1]}."
            )
        x = self.encoder(frames)
        new_states = []
        for i, layer in enumerate(self.layers):
            x, state = layer(x, reset=reset, h0=None if states is None else states[i])
            new_states.append(state)
        return self.decoder(x), tuple(new_states)

    def __call__(self, frames, *, reset=None, train: bool = False):
        """Teacher-forced logits of x_{t+1} for every t: (batch, T, H, W, C)."""
        del train  # no dropout or batch statistics
        return self.prefill(frames, reset=reset)[0]

    def step(self, states, frame):
        """One frame (batch, H, W, C) -> (states, logits of the next frame)."""
        x = self.encoder(frame)
        new_states = []
        for layer, state in zip(self.layers, states):
            state, x = layer.step(state, x)
            new_states.append(state)
        return tuple(new_states), self.decoder(x)


def rollout(model: nn.Module, variables, prefix: jax.Array, num_frames: int) -> jax.Array:
    """Conditions on `prefix` (batch, T0, H, W, C) in [0, 1], then generates `num_frames`
    frames (batch, num_frames, H, W, C) in [0, 1] one at a time, each fed back in as the
    next input (the predicted mean, no sampling)."""
    logits, states = model.apply(variables, prefix, method="prefill")
    first = jax.nn.sigmoid(logits[:, -1])

    def body(carry, _):
        states, frame = carry
        states, logits = model.apply(variables, states, frame, method="step")
        frame = jax.nn.sigmoid(logits)
        return (states, frame), frame

    if num_frames == 1:
        return first[:, None]
    _, rest = jax.lax.scan(body, (states, first), None, length=num_frames - 1)
    return jnp.concatenate([first[:, None], jnp.moveaxis(rest, 0, 1)], axis=1)
