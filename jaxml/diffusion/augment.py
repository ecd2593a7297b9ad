"""EDM's non-leaky geometric augmentation (Karras et al. 2022, appendix; ADA's pipeline).

Each image is transformed with probability ``p × multiplier`` per component,
and the network is told what was done: `augment` returns, with the images,
a (N, augment_dim) vector of augmentation labels that conditions the U-Net
(`UNet(augment_dim=...)`, "map_augment"). At sampling time the labels are
zero (no augmentation), so the model generates un-augmented images: the
augmentations cannot leak into the samples.

Components, in EDM's order (the label layout; only enabled ones appear):

====================  =====================================  =======
component             label entries                          count
====================  =====================================  =======
xflip                 1 if flipped left-right                1
yflip                 1 if flipped upside-down               1
rotate_int            (x-flipped?, y-flipped?) of k·90°      2
translate_int         tx, ty / (size · translate_int_max)    2
scale                 log2(s) / scale_std                    1
rotate_frac           cos(θ) - 1, sin(θ)                     2
aniso                 w cos r, w sin r                       2
translate_frac        tx, ty / (size · translate_frac_std)   2
====================  =====================================  =======

EDM's CIFAR-10 recipe (`CIFAR10_PIPELINE`): xflip=1e8 (always a coin flip),
yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1 with p = 0.12:
augment_dim = 9. Pixel blitting (flips, 90° rotations, integer translation
with mirror padding) is exact; the continuous transforms (scale, rotation,
anisotropy, fractional translation) are composed into one inverse affine
map per image and sampled bilinearly with mirror padding. EDM additionally
oversamples 2× with a sym6 wavelet filter around that bilinear sampling
(antialiasing); this version samples at the image resolution.

Images are NHWC (any float range); everything is traceable under jit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

Array = Any

# Component -> (label names), in the order EDM appends them.
LABELS = {
    "xflip": ("xflip",),
    "yflip": ("yflip",),
    "rotate_int": ("rotate_int_x", "rotate_int_y"),
    "translate_int": ("translate_int_x", "translate_int_y"),
    "scale": ("scale",),
    "rotate_frac": ("rotate_frac_cos", "rotate_frac_sin"),
    "aniso": ("aniso_cos", "aniso_sin"),
    "translate_frac": ("translate_frac_x", "translate_frac_y"),
}
DEFAULTS = dict(
    p=0.0,
    xflip=0.0,
    yflip=0.0,
    rotate_int=0.0,
    translate_int=0.0,
    translate_int_max=0.125,
    scale=0.0,
    rotate_frac=0.0,
    aniso=0.0,
    translate_frac=0.0,
    scale_std=0.2,
    rotate_frac_max=1.0,
    aniso_std=0.2,
    aniso_rotate_prob=0.5,
    translate_frac_std=0.125,
)
# EDM train.py, --augment for CIFAR-10 (p = 0.12 in its config F).
CIFAR10_PIPELINE = dict(
    p=0.12, xflip=1e8, yflip=1.0, scale=1.0, rotate_frac=1.0, aniso=1.0, translate_frac=1.0
)


def _options(options: Mapping) -> dict:
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown augmentation options {sorted(unknown)}; known: {sorted(DEFAULTS)}"
        )
    merged = {**DEFAULTS, **options}
    if not 0.0 <= merged["p"] <= 1.0:
        raise ValueError(f"augmentation p must be in [0, 1], got {merged['p']}")
    for name in LABELS:
        if merged[name] < 0:
            raise ValueError(f"augmentation multiplier {name} must be >= 0, got {merged[name]}")
    return merged


def label_names(**options) -> list[str]:
    """Names of the augmentation label entries for these options, in EDM's order."""
    merged = _options(options)
    return [label for name, labels in LABELS.items() if merged[name] > 0 for label in labels]


def augment_dim(**options) -> int:
    """The label size (UNet `augment_dim`) of a pipeline: 9 for `CIFAR10_PIPELINE`."""
    return len(label_names(**options))


def _gate(key, n, probability):
    """(n,) bool: which images get this component."""
    return jax.random.uniform(key, (n,)) < probability


def _rotate(theta):
    c, s = jnp.cos(theta), jnp.sin(theta)
    z, o = jnp.zeros_like(theta), jnp.ones_like(theta)
    return jnp.stack(
        [jnp.stack([c, -s, z], -1), jnp.stack([s, c, z], -1), jnp.stack([z, z, o], -1)], -2
    )


def _scale(sx, sy):
    z, o = jnp.zeros_like(sx), jnp.ones_like(sx)
    return jnp.stack(
        [jnp.stack([sx, z, z], -1), jnp.stack([z, sy, z], -1), jnp.stack([z, z, o], -1)], -2
    )


def _translate(tx, ty):
    z, o = jnp.zeros_like(tx), jnp.ones_like(tx)
    return jnp.stack(
        [jnp.stack([o, z, tx], -1), jnp.stack([z, o, ty], -1), jnp.stack([z, z, o], -1)], -2
    )


def _mirror_index(i, size):
    """Mirror (reflect without repeating the edge) an integer index into [0, size)."""
    period = 2 * size - 2
    return size - 1 - jnp.abs(size - 1 - jnp.mod(i, period))


def translate_integer(images: Array, tx: Array, ty: Array) -> Array:
    """Shifts each image by integer (tx, ty) pixels with mirror padding, as EDM's blitting does.

    Output pixel (y, x) reads input (mirror(y + ty), mirror(x - tx)): content
    moves right by tx and up by ty (EDM's sign convention for y).
    """
    _, h, w, _ = images.shape
    ys = _mirror_index(jnp.arange(h)[None, :] + ty[:, None], h)  # (N, H)
    xs = _mirror_index(jnp.arange(w)[None, :] - tx[:, None], w)  # (N, W)
    rows = jnp.take_along_axis(images, ys[:, :, None, None], axis=1)
    return jnp.take_along_axis(rows, xs[:, None, :, None], axis=2)


def apply_affine(images: Array, g_inv: Array) -> Array:
    """out(p) = in(G⁻¹ p) per image, p in pixel coordinates centred on the image.

    g_inv: (N, 3, 3) inverse transforms (x right, y down, origin at the image
    centre ((W-1)/2, (H-1)/2)). Bilinear sampling with mirror padding; an
    identity G⁻¹ returns the images exactly.
    """
    n, h, w, c = images.shape
    cx, cy = (w - 1) / 2, (h - 1) / 2
    yy, xx = jnp.meshgrid(
        jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij"
    )
    points = jnp.stack([xx - cx, yy - cy, jnp.ones_like(xx)], 0).reshape(3, -1)  # (3, H·W)
    src = jnp.einsum("nij,jp->nip", g_inv.astype(jnp.float32), points)
    src_x, src_y = src[:, 0] + cx, src[:, 1] + cy  # (N, H·W)

    def sample(image, sx, sy):  # image (H, W, C)
        return jax.vmap(
            lambda channel: jax.scipy.ndimage.map_coordinates(
                channel, [sy, sx], order=1, mode="mirror"
            ),
            in_axes=-1,
            out_axes=-1,
        )(image)

    return jax.vmap(sample)(images, src_x, src_y).reshape(n, h, w, c)


def augment(key: Array, images: Array, **options) -> tuple[Array, Array]:
    """Augments a batch; returns (images, labels (N, augment_dim(**options)) float32).

    options: p (overall probability multiplier) and the per-component
    multipliers and ranges of `DEFAULTS` (EDM's `AugmentPipe` arguments).
    With p = 0 (or all multipliers 0) the images are returned unchanged and
    the labels are zero.
    """
    o = _options(options)
    images = jnp.asarray(images)
    n, h, w, _ = images.shape
    keys = iter(jax.random.split(key, 20))
    labels = []

    def flip(images, axis, enabled):
        return jnp.where(enabled[:, None, None, None], jnp.flip(images, axis), images)

    if o["xflip"] > 0:
        on = jax.random.bernoulli(next(keys), 0.5, (n,)) & _gate(next(keys), n, o["xflip"] * o["p"])
        images = flip(images, 2, on)
        labels.append(on)
    if o["yflip"] > 0:
        on = jax.random.bernoulli(next(keys), 0.5, (n,)) & _gate(next(keys), n, o["yflip"] * o["p"])
        images = flip(images, 1, on)
        labels.append(on)
    if o["rotate_int"] > 0:
        if h != w:
            raise ValueError(f"rotate_int needs square images, got {h}×{w}")
        k = jax.random.randint(next(keys), (n,), 0, 4)
        k = jnp.where(_gate(next(keys), n, o["rotate_int"] * o["p"]), k, 0)
        images = flip(images, 2, (k == 1) | (k == 2))
        images = flip(images, 1, (k == 2) | (k == 3))
        odd = (k == 1) | (k == 3)
        images = jnp.where(odd[:, None, None, None], jnp.swapaxes(images, 1, 2), images)
        labels += [(k == 1) | (k == 2), (k == 2) | (k == 3)]
    if o["translate_int"] > 0:
        u = jax.random.uniform(next(keys), (2, n), minval=-1.0, maxval=1.0)
        u = jnp.where(_gate(next(keys), n, o["translate_int"] * o["p"]), u, 0.0)
        tx = jnp.round(u[0] * w * o["translate_int_max"]).astype(jnp.int32)
        ty = jnp.round(u[1] * h * o["translate_int_max"]).astype(jnp.int32)
        images = translate_integer(images, tx, ty)
        labels += [tx / (w * o["translate_int_max"]), ty / (h * o["translate_int_max"])]

    g_inv = jnp.broadcast_to(jnp.eye(3), (n, 3, 3))
    geometric = False
    transformed = jnp.zeros((n,), bool)  # images with a non-identity G⁻¹
    if o["scale"] > 0:
        z = jax.random.normal(next(keys), (n,))
        on = _gate(next(keys), n, o["scale"] * o["p"])
        z, transformed = jnp.where(on, z, 0.0), transformed | on
        s = jnp.exp2(z * o["scale_std"])
        g_inv = g_inv @ _scale(1 / s, 1 / s)
        labels.append(z)
        geometric = True
    if o["rotate_frac"] > 0:
        theta = jax.random.uniform(next(keys), (n,), minval=-1.0, maxval=1.0)
        theta = theta * math.pi * o["rotate_frac_max"]
        on = _gate(next(keys), n, o["rotate_frac"] * o["p"])
        theta, transformed = jnp.where(on, theta, 0.0), transformed | on
        g_inv = g_inv @ _rotate(theta)  # EDM: rotate2d_inv(-θ)
        labels += [jnp.cos(theta) - 1, jnp.sin(theta)]
        geometric = True
    if o["aniso"] > 0:
        z = jax.random.normal(next(keys), (n,))
        r = jax.random.uniform(next(keys), (n,), minval=-math.pi, maxval=math.pi)
        on = _gate(next(keys), n, o["aniso"] * o["p"])
        z, transformed = jnp.where(on, z, 0.0), transformed | on
        r = jnp.where(_gate(next(keys), n, o["aniso_rotate_prob"]), r, 0.0)
        s = jnp.exp2(z * o["aniso_std"])
        g_inv = g_inv @ _rotate(-r) @ _scale(1 / s, s) @ _rotate(r)
        labels += [z * jnp.cos(r), z * jnp.sin(r)]
        geometric = True
    if o["translate_frac"] > 0:
        z = jax.random.normal(next(keys), (2, n))
        on = _gate(next(keys), n, o["translate_frac"] * o["p"])
        z, transformed = jnp.where(on, z, 0.0), transformed | on
        std = o["translate_frac_std"]
        g_inv = g_inv @ _translate(-z[0] * w * std, -z[1] * h * std)
        labels += [z[0], z[1]]
        geometric = True
    if geometric:
        # Untransformed images are kept bit-exact (bilinear sampling at G⁻¹ = I has roundoff).
        images = jnp.where(transformed[:, None, None, None], apply_affine(images, g_inv), images)

    if not labels:
        return images, jnp.zeros((n, 0), jnp.float32)
    return images, jnp.stack([jnp.asarray(x, jnp.float32) for x in labels], axis=-1)
