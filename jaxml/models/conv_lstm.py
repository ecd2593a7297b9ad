"""ConvLSTM video model, the baseline of the ConvS5 paper: flax's ConvLSTMCell under nn.scan.

Same frame encoder/decoder and interface (`__call__`, `prefill`, `step`) as
`ConvS5VideoModel`, with each ConvS5 block replaced by LayerNorm -> ConvLSTM -> + skip. The
recurrence is nonlinear in the state, so training runs it one frame after another; that
sequential dependency is what ConvS5's parallel scan removes.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from jaxml.models.conv_s5 import FrameDecoder, FrameEncoder, check_frames

_ScannedConvLSTM = nn.scan(
    nn.ConvLSTMCell,
    variable_broadcast="params",
    split_rngs={"params": False},
    in_axes=1,
    out_axes=1,
)


class ConvLSTMBlock(nn.Module):
    features: int
    kernel_size: int = 3

    def setup(self):
        self.norm = nn.LayerNorm()
        self.cell = _ScannedConvLSTM(self.features, (self.kernel_size, self.kernel_size))

    def __call__(self, x, carry=None):
        """x (batch, T, h, w, features) -> (output, (c, h) after the last frame)."""
        if carry is None:
            zeros = jnp.zeros(x.shape[:1] + x.shape[2:4] + (self.features,), x.dtype)
            carry = (zeros, zeros)
        carry, y = self.cell(carry, self.norm(x))
        return x + y, carry


class ConvLSTMVideoModel(nn.Module):
    """Next-frame ConvLSTM model: encoder -> `n_layers` residual ConvLSTM blocks -> decoder."""

    channels: int = 1
    d_model: int = 32
    n_layers: int = 2
    downsample: int = 1
    kernel_size: int = 3

    def setup(self):
        self.encoder = FrameEncoder(self.d_model, self.downsample)
        self.layers = [ConvLSTMBlock(self.d_model, self.kernel_size) for _ in range(self.n_layers)]
        self.decoder = FrameDecoder(self.d_model, self.channels, self.downsample)

    def prefill(self, frames, *, reset=None, states=None):
        check_frames(frames)
        if reset is not None:
            raise ValueError("ConvLSTMVideoModel does not support reset")
        x = self.encoder(frames)
        new_states = []
        for i, layer in enumerate(self.layers):
            x, carry = layer(x, None if states is None else states[i])
            new_states.append(carry)
        return self.decoder(x), tuple(new_states)

    def __call__(self, frames, *, reset=None, train: bool = False):
        del train
        return self.prefill(frames, reset=reset)[0]

    def step(self, states, frame):
        """One frame through the same scanned cells (a length-1 scan)."""
        logits, states = self.prefill(frame[:, None], states=states)
        return states, logits[:, 0]
