"""Bouncing-digit videos as TFDS datasets: `moving_digits` (embedded) and `bouncing_mnist`.

`moving_digits`: scikit-learn's 8x8 digits, upsampled to 16x16, 1 or 2 of them moving on a
32x32 canvas and bouncing off its edges (overlaps take the brighter pixel, as in
Moving-MNIST). Train videos use the digits' train split, test videos its test split, so
test digits are unseen. Everything comes from a fixed-seed NumPy generator: the files are
the same on every machine.

`bouncing_mnist`: Moving-MNIST (Srivastava et al. 2015) from the same generator: MNIST's
28x28 digits (always 2) on a 64x64 canvas, train and test videos. (TFDS's own
`moving_mnist` is a fixed 20-frame test set only, hence another name.) Built from a
prepared TFDS `mnist` in the same data_dir (`python -m jaxml.data.prepare --dataset=mnist`);
nothing is downloaded here.

Records: {"video": uint8 (frames, size, size, 1)}. Train videos are shorter than test ones
so that evaluation can roll out far beyond the training length.
"""

import numpy as np
import tensorflow_datasets as tfds

from jaxml.data.builders.digits import digits_split

# (number of videos, frames per video) per split.
SPLITS = {"train": (1500, 24), "test": (128, 100)}
SEEDS = {"train": 0, "test": 1}


def bouncing_videos(
    digits: np.ndarray,
    num_videos: int,
    num_frames: int,
    *,
    canvas: int,
    max_digits: int,
    min_digits: int = 1,
    speed: tuple[float, float] = (1.0, 2.0),
    seed: int = 0,
) -> np.ndarray:
    """(num_videos, num_frames, canvas, canvas, 1) uint8 videos of digits bouncing in a box.

    Each video draws min_digits..max_digits digits from `digits` (n, s, s) uint8, a start
    position uniform in the box, a direction uniform on the circle and a speed uniform in
    `speed` (pixels per frame); a digit reflects off an edge it would cross.
    """
    rng = np.random.default_rng(seed)
    size = digits.shape[1]
    room = canvas - size
    if room < 1:
        raise ValueError(f"digits of size {size} do not fit a {canvas}x{canvas} canvas")
    videos = np.zeros((num_videos, num_frames, canvas, canvas), np.uint8)
    for v in range(num_videos):
        for _ in range(rng.integers(min_digits, max_digits + 1)):
            digit = digits[rng.integers(len(digits))]
            pos = rng.uniform(0, room, size=2)
            angle = rng.uniform(0, 2 * np.pi)
            vel = rng.uniform(*speed) * np.array([np.sin(angle), np.cos(angle)])
            for t in range(num_frames):
                r, c = np.round(pos).astype(int)
                window = videos[v, t, r : r + size, c : c + size]
                np.maximum(window, digit, out=window)
                pos = pos + vel
                for axis in range(2):  # reflect at the walls
                    if pos[axis] < 0:
                        pos[axis], vel[axis] = -pos[axis], -vel[axis]
                    elif pos[axis] > room:
                        pos[axis], vel[axis] = 2 * room - pos[axis], -vel[axis]
    return videos[..., None]


def upsampled_sklearn_digits(split: str) -> np.ndarray:
    """scikit-learn digits of `split` as (n, 16, 16) uint8 (bilinear 2x upsampling)."""
    from jaxml.data.preprocess import resize_bilinear

    images = digits_split()[split][0].astype(np.float32)
    return np.clip(np.round(resize_bilinear(images, 16)[..., 0]), 0, 255).astype(np.uint8)


class MovingDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn digits bouncing on a 32x32 canvas: 1500 train videos of 24 frames,
    128 test videos of 100 frames, 1-2 digits each."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "16x16 sklearn digits, 32x32 canvas, seeds 0 (train) / 1 (test)."}
    CANVAS, MIN_DIGITS, MAX_DIGITS, SPEED = 32, 1, 2, (1.0, 2.0)

    def _info(self) -> tfds.core.DatasetInfo:
        c = self.CANVAS
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {"video": tfds.features.Tensor(shape=(None, c, c, 1), dtype=np.uint8)}
            ),
            disable_shuffling=True,
        )

    def _digits(self, split: str) -> np.ndarray:
        return upsampled_sklearn_digits(split)

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str):
        num_videos, num_frames = SPLITS[split]
        videos = bouncing_videos(
            self._digits(split),
            num_videos,
            num_frames,
            canvas=self.CANVAS,
            min_digits=self.MIN_DIGITS,
            max_digits=self.MAX_DIGITS,
            speed=self.SPEED,
            seed=SEEDS[split],
        )
        for i, video in enumerate(videos):
            yield i, {"video": video}


class BouncingMnist(MovingDigits):
    """Moving-MNIST: two 28x28 MNIST digits on a 64x64 canvas, from a prepared TFDS mnist."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "TFDS mnist digits, 64x64 canvas, seeds 0 (train) / 1 (test)."}
    CANVAS, MIN_DIGITS, MAX_DIGITS, SPEED = 64, 2, 2, (2.0, 4.0)

    def _digits(self, split: str) -> np.ndarray:
        from jaxml.data.sources import DatasetUnavailableError, prepare_command

        root = str(self._data_dir_root)
        builder = tfds.builder("mnist", data_dir=root)
        if not builder.is_prepared():
            raise DatasetUnavailableError(
                f"bouncing_mnist is made from TFDS mnist, which is not prepared in {root}; "
                f"prepare it once with: {prepare_command('mnist', root)}"
            )
        source = builder.as_data_source(split=split)
        return np.stack([source[i]["image"][..., 0] for i in range(len(source))])
