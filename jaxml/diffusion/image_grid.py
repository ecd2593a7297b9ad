"""Save a batch of images as one PNG grid (what a person looks at after each eval)."""

import os

import numpy as np
from etils import epath
from PIL import Image


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images in [-1, 1] (the EDM convention) -> uint8 0..255."""
    return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(
        np.uint8
    )


def image_grid(images: np.ndarray, num_cols: int | None = None, pad: int = 1) -> np.ndarray:
    """(N, H, W, C) uint8 -> one (rows*(H+pad)+pad, cols*(W+pad)+pad, C) uint8 image."""
    n, h, w, c = images.shape
    num_cols = num_cols or int(np.ceil(np.sqrt(n)))
    num_rows = -(-n // num_cols)
    grid = np.full((num_rows * (h + pad) + pad, num_cols * (w + pad) + pad, c), 255, np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, num_cols)
        grid[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + col * (w + pad) : pad + col * (w + pad) + w,
        ] = image
    return grid


def save_image_grid(
    images: np.ndarray, path: str | os.PathLike, *, num_cols: int | None = None, scale: int = 1
) -> epath.Path:
    """Writes images in [-1, 1] (float) or uint8 as a PNG grid, upscaled `scale`x (nearest)."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = to_uint8(images)
    grid = image_grid(images, num_cols)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    path = epath.Path(path)  # local or gs://
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(f, format="PNG")
    return path
