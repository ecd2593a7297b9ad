"""Small fake inputs in the raw official formats, for the paper-task builder tests.

- TFDS mnist / cifar10 / imdb_reviews: the registered TFDS builders, fed fake examples
  (images as PNG bytes made with PIL, so no TensorFlow is needed) and written as
  array_record under their own names, exactly where a user's prepared copy would be.
- LRA: TSV files; pathfinder: PNG folders + metadata files; speech: WAV files + lists.
"""

import io
import wave
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(buffer, "png")
    return buffer.getvalue()


def _fake_tfds(source_name: str, splits: dict, config=None, **kw):
    """Prepares the registered TFDS builder `source_name` with `splits` = {split: [example]}."""
    base = tfds.builder_cls(source_name)

    class Fake(base, skip_registration=True):
        name = source_name

        def _split_generators(self, dl_manager):
            return {s: self._generate(examples) for s, examples in splits.items()}

        def _generate(self, examples):
            yield from enumerate(examples)

    builder = Fake(file_format="array_record", config=config, **kw)
    builder.download_and_prepare()
    return builder


def write_fake_images(data_dir, source_name: str, shape, n_train: int, n_test: int, seed=0):
    """Fake TFDS mnist (28, 28, 1) or cifar10 (32, 32, 3); returns {split: (images, labels)}."""
    rng = np.random.default_rng(seed)
    arrays = {}
    splits = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n)
        arrays[split] = (images, labels)
        examples = []
        for i, (image, label) in enumerate(zip(images, labels)):
            example = {"image": png_bytes(image), "label": int(label)}
            if source_name == "cifar10":
                example["id"] = f"{split}_{i:05d}"
            examples.append(example)
        splits[split] = examples
    _fake_tfds(source_name, splits, data_dir=str(data_dir))
    return arrays


def write_fake_imdb_reviews(data_dir, texts: dict):
    """Fake TFDS imdb_reviews/plain_text: texts = {split: [(text, label)]}."""
    splits = {s: [{"text": t, "label": y} for t, y in rows] for s, rows in texts.items()}
    splits.setdefault("unsupervised", [{"text": "x", "label": -1}])
    _fake_tfds("imdb_reviews", splits, config="plain_text", data_dir=str(data_dir))


def write_tsv(path: Path, rows, header=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (["\t".join(header)] if header else []) + ["\t".join(map(str, r)) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf8")


def write_pathfinder(level_dir: Path, images: np.ndarray, labels, per_metadata_file: int = 4):
    """imgs/<k>/sample_<j>.png + metadata/<k>.npy text lines, as the LRA release lays them out."""
    for start in range(0, len(images), per_metadata_file):
        k = start // per_metadata_file
        (level_dir / f"imgs/{k}").mkdir(parents=True, exist_ok=True)
        (level_dir / "metadata").mkdir(parents=True, exist_ok=True)
        lines = []
        for j, i in enumerate(range(start, min(start + per_metadata_file, len(images)))):
            Image.fromarray(images[i]).save(level_dir / f"imgs/{k}/sample_{j}.png")
            lines.append(f"imgs/{k} sample_{j}.png {i} {labels[i]} 14 1.5 7")
        (level_dir / f"metadata/{k}.npy").write_text("\n".join(lines) + "\n")


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(samples.astype("<i2").tobytes())
