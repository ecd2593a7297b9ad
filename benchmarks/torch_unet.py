"""A PyTorch port of `jaxml.models.unet.UNet` (DDPM++ / EDM SongUNet layout), the CPU peer
of benchmarks/diffusion_throughput.py.

Written from jaxml's Flax module (not from NVlabs/edm): the same layers in the same order,
named as in the Flax parameter tree, so that `load_flax_params` can copy a Flax `params`
tree into it and tests/test_torch_unet_port.py can check that both give the same output.
Layout is PyTorch's usual NCHW; the 1x1 projections (skip, qkv, proj) are 1x1 convolutions.

`TorchTrainStep` is the training step the benchmark times against jaxml's: the same
preconditioned PFGM++/EDM denoising loss, Adam, optional global-norm clipping and an EMA.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SQRT_HALF = math.sqrt(0.5)  # EDM's skip_scale


def num_groups(channels: int, max_groups: int = 32, min_channels_per_group: int = 4) -> int:
    groups = max(1, min(max_groups, channels // min_channels_per_group))
    while channels % groups:
        groups -= 1
    return groups


def group_norm(channels: int, eps: float = 1e-6) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups(channels), channels, eps=eps)


def resample(x: torch.Tensor, up: bool, down: bool) -> torch.Tensor:
    if down:
        return F.avg_pool2d(x, 2)
    if up:
        return F.interpolate(x, scale_factor=2, mode="nearest")
    return x


class Block(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        *,
        up=False,
        down=False,
        attention=False,
        num_heads=1,
        dropout=0.0,
        skip_scale=1.0,
        adaptive_scale=False,
    ):
        super().__init__()
        self.up, self.down, self.attention = up, down, attention
        self.num_heads, self.skip_scale, self.adaptive_scale = num_heads, skip_scale, adaptive_scale
        self.norm0 = group_norm(in_channels)
        self.conv0 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.affine = nn.Linear(emb_channels, out_channels * (2 if adaptive_scale else 1))
        self.norm1 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = None
        if out_channels != in_channels or up or down:
            self.skip = nn.Conv2d(in_channels, out_channels, 1)
        if attention:
            self.norm2 = group_norm(out_channels)
            self.qkv = nn.Conv2d(out_channels, 3 * out_channels, 1)
            self.proj = nn.Conv2d(out_channels, out_channels, 1)

    def forward(self, x, emb):
        orig = x
        x = self.conv0(resample(F.silu(self.norm0(x)), self.up, self.down))
        params = self.affine(emb)[:, :, None, None]
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            x = F.silu(shift + self.norm1(x) * (scale + 1))
        else:
            x = F.silu(self.norm1(x + params))
        x = self.conv1(self.dropout(x))
        skip = orig if self.skip is None else self.skip(resample(orig, self.up, self.down))
        x = (x + skip) * self.skip_scale
        if self.attention:
            b, c, h, w = x.shape
            heads, d = self.num_heads, c // self.num_heads
            # Channel order of the Flax qkv Dense: (3, heads, head_dim).
            qkv = self.qkv(self.norm2(x)).reshape(b, 3, heads, d, h * w)
            q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (b, heads, hw, d)
            a = F.scaled_dot_product_attention(q, k, v)
            a = a.transpose(-1, -2).reshape(b, c, h, w)
            x = (self.proj(a) + x) * self.skip_scale
        return x


class TorchUNet(nn.Module):
    """Same constructor arguments as `jaxml.models.unet.UNet` plus the input size."""

    def __init__(
        self,
        resolution: int,
        in_channels: int,
        *,
        model_channels=128,
        channel_mult=(2, 2, 2),
        num_blocks=4,
        attn_resolutions=(16,),
        dropout=0.10,
        num_classes=0,
        augment_dim=0,
        channel_mult_noise=1,
        channel_mult_emb=4,
        adaptive_scale=False,
        num_heads=1,
        skip_scale=SQRT_HALF,
        out_channels=None,
        embedding_type="positional",
        **unused,
    ):
        super().__init__()
        if embedding_type != "positional":
            raise ValueError("the port implements the positional (DDPM++) embedding only")
        self.noise_channels = model_channels * channel_mult_noise
        emb_channels = model_channels * channel_mult_emb
        self.num_classes, self.augment_dim = num_classes, augment_dim
        self.map_label = nn.Linear(num_classes, self.noise_channels) if num_classes else None
        self.map_augment = (
            nn.Linear(augment_dim, self.noise_channels, bias=False) if augment_dim else None
        )
        self.map_layer0 = nn.Linear(self.noise_channels, emb_channels)
        self.map_layer1 = nn.Linear(emb_channels, emb_channels)
        kw = dict(
            emb_channels=emb_channels,
            num_heads=num_heads,
            dropout=dropout,
            skip_scale=skip_scale,
            adaptive_scale=adaptive_scale,
        )
        self.enc = nn.ModuleDict()
        skip_channels = []
        c = in_channels
        for level, mult in enumerate(channel_mult):
            res = resolution >> level
            if level == 0:
                self.enc[f"enc_{res}x{res}_conv"] = nn.Conv2d(c, model_channels, 3, padding=1)
                c = model_channels
            else:
                self.enc[f"enc_{res}x{res}_down"] = Block(c, c, down=True, **kw)
            skip_channels.append(c)
            for idx in range(num_blocks):
                out = model_channels * mult
                attn = res in attn_resolutions
                self.enc[f"enc_{res}x{res}_block{idx}"] = Block(c, out, attention=attn, **kw)
                c = out
                skip_channels.append(c)
        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"dec_{res}x{res}_in0"] = Block(c, c, attention=True, **kw)
                self.dec[f"dec_{res}x{res}_in1"] = Block(c, c, **kw)
            else:
                self.dec[f"dec_{res}x{res}_up"] = Block(c, c, up=True, **kw)
            for idx in range(num_blocks + 1):
                cin, out = c + skip_channels.pop(), model_channels * mult
                attn = idx == num_blocks and res in attn_resolutions
                self.dec[f"dec_{res}x{res}_block{idx}"] = Block(cin, out, attention=attn, **kw)
                c = out
        self.out_norm = group_norm(c)
        self.out_conv = nn.Conv2d(c, out_channels or in_channels, 3, padding=1)

    def embed(self, c_noise, labels=None, augment_labels=None):
        half = self.noise_channels // 2
        freqs = torch.arange(half, dtype=torch.float32, device=c_noise.device) / max(half - 1, 1)
        freqs = (1.0 / 10000) ** freqs
        args = c_noise.float()[:, None] * freqs[None, :]
        emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
        if self.map_label is not None:
            onehot = torch.zeros(len(c_noise), self.num_classes, device=c_noise.device)
            if labels is not None:
                ok = (labels >= 0) & (labels < self.num_classes)
                onehot[ok, labels[ok]] = math.sqrt(self.num_classes)
            emb = emb + self.map_label(onehot)
        if self.map_augment is not None:
            if augment_labels is None:
                augment_labels = torch.zeros(len(c_noise), self.augment_dim, device=c_noise.device)
            emb = emb + self.map_augment(augment_labels)
        emb = F.silu(self.map_layer0(emb))
        return F.silu(self.map_layer1(emb))

    def forward(self, x, c_noise, labels=None, augment_labels=None):
        emb = self.embed(c_noise, labels, augment_labels)
        skips = []
        for name, layer in self.enc.items():
            x = layer(x) if name.endswith("_conv") else layer(x, emb)
            skips.append(x)
        for name, layer in self.dec.items():
            if "_block" in name:
                x = torch.cat([x, skips.pop()], dim=1)
            x = layer(x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))


def load_flax_params(module: TorchUNet, params) -> None:
    """Copies a Flax UNet `params` tree (nested dicts of arrays) into `module`, in place."""
    modules = dict(module.named_modules())

    def visit(prefix: list[str], tree):
        if "kernel" not in tree and "scale" not in tree:
            for key, sub in tree.items():
                visit([*prefix, key], sub)
            return
        # Flax names: top-level layers and blocks sit directly under params; blocks live in
        # the enc / dec ModuleDicts here.
        head = prefix[0]
        path = "enc." if head.startswith("enc_") else "dec." if head.startswith("dec_") else ""
        layer = modules[path + ".".join(prefix)]
        with torch.no_grad():
            for key, value in tree.items():
                value = torch.from_numpy(np.array(value, dtype=np.float32))
                if key == "scale":
                    layer.weight.copy_(value)
                elif key == "bias":
                    layer.bias.copy_(value)
                elif value.ndim == 4:  # conv (kh, kw, in, out) -> (out, in, kh, kw)
                    layer.weight.copy_(value.permute(3, 2, 0, 1))
                elif isinstance(layer, nn.Conv2d):  # Dense (in, out) as a 1x1 conv
                    layer.weight.copy_(value.T[:, :, None, None])
                else:
                    layer.weight.copy_(value.T)

    visit([], params)


class TorchTrainStep:
    """One training step on a batch of NCHW images: loss, backward, Adam, clip, EMA.

    The loss is jaxml's (jaxml/diffusion/losses.py with EDM preconditioning): ln σ ~
    N(P_mean, P_std²), PFGM++ noise (Gaussian for D=None, else its radius from χ²_D),
    D(x) = c_skip x + c_out F(c_in x, ln σ / 4), weight λ(σ), mean over elements and batch.
    """

    def __init__(
        self,
        net: TorchUNet,
        *,
        D=None,
        lr=1e-3,
        grad_clip=0.0,
        ema_decay=0.999,
        sigma_data=0.5,
        P_mean=-1.2,
        P_std=1.2,
    ):
        self.net, self.D, self.grad_clip, self.ema_decay = net, D, grad_clip, ema_decay
        self.sigma_data, self.P_mean, self.P_std = sigma_data, P_mean, P_std
        self.opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
        self.ema = [p.detach().clone() for p in net.parameters()]

    def loss(self, y):
        b = y.shape[0]
        sigma = torch.exp(self.P_mean + self.P_std * torch.randn(b))
        noise = torch.randn_like(y) * sigma[:, None, None, None]
        if self.D is not None:
            g = 2.0 * torch._standard_gamma(torch.full((b,), self.D / 2.0))
            noise = noise * torch.sqrt(self.D / g)[:, None, None, None]
        sd = self.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / torch.sqrt(sigma**2 + sd**2)
        c_in = 1.0 / torch.sqrt(sigma**2 + sd**2)
        x = y + noise
        e = lambda v: v[:, None, None, None]
        denoised = e(c_skip) * x + e(c_out) * self.net(e(c_in) * x, torch.log(sigma) / 4.0)
        weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
        return (weight * (denoised - y).square().reshape(b, -1).mean(1)).mean()

    def __call__(self, y):
        self.net.train()
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(y)
        loss.backward()
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)
        self.opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, list(self.net.parameters()), 1.0 - self.ema_decay)
        return loss.detach()
