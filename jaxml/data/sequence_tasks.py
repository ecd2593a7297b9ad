"""The S5 paper's tasks: what each stored record holds and how a batch becomes model inputs.

`TASK_SPECS[name]` tells the model side what to expect after preprocessing:
vocab_size (token tasks; ids < vocab_size, 0 = padding), num_classes, seq_len,
channels (continuous tasks), has_validation, the preprocess name to put in
`config.data.preprocess`, the splits, and the official full-size split sizes.

`RECORD_FIELDS[name]` is the stored record format (field -> (shape, numpy dtype));
the builders write exactly these fields and the mock sources generate them.

The transforms reproduce the official loaders (HazyResearch/state-spaces
`src/dataloaders/{basic,lra}.py`, copied into lindermanlab/S5 `s5/dataloaders/`):
  - sMNIST / psMNIST: ToTensor only (pixels / 255, no normalisation), (784, 1).
  - sCIFAR: per-channel Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)), (1024, 3).
  - LRA Image: PIL grayscale, Normalize(mean=122.6/255, std=61/255), (1024, 1).
  - Pathfinder / Path-X: ToTensor then Normalize(0.5, 0.5), i.e. x/255*2-1, (L, 1).
  - Speech Commands: the official loader divides torchaudio's float waveform by 2**15
    once more (so the waveform is int16 / 2**30), zero-pads to 16000, then normalises
    every time step t with the train split's mean and (unbiased) std at t:
    (x_t - mean_t) / (std_t + 1e-5) (`normalize_all_data` loops over the last axis, which
    is time). The builder stores that normalised float32 waveform; the 8 kHz test split is
    every other sample of it (the official `subsample` after normalising).
"""

import numpy as np

# Speech Commands: the official loader's constants (used by the builder).
SPEECH_SCALE = 2.0**-30  # torchaudio float (int16 / 2**15) divided by 2**15 again
SPEECH_STD_EPS = 1e-5

SCIFAR_MEAN = (0.4914, 0.4822, 0.4465)
SCIFAR_STD = (0.247, 0.243, 0.261)
LRA_CIFAR_MEAN = 122.6 / 255.0
LRA_CIFAR_STD = 61.0 / 255.0

# Official full-size split sizes (documentation; the builders derive them from the data).
# MNIST 60000/10000 and CIFAR-10 50000/10000 train with a 10 % validation cut:
# train = int(0.9 * n). Pathfinder: int(0.1 * n) validation and test, the rest train.
TASK_SPECS = {
    "smnist": dict(
        vocab_size=None,
        num_classes=10,
        seq_len=784,
        channels=1,
        has_validation=True,
        preprocess="pixel_sequence",
        splits=("train", "validation", "test"),
        official_sizes=dict(train=54000, validation=6000, test=10000),
    ),
    "psmnist": dict(
        vocab_size=None,
        num_classes=10,
        seq_len=784,
        channels=1,
        has_validation=True,
        preprocess="pixel_sequence",
        splits=("train", "validation", "test"),
        official_sizes=dict(train=54000, validation=6000, test=10000),
    ),
    "scifar": dict(
        vocab_size=None,
        num_classes=10,
        seq_len=1024,
        channels=3,
        has_validation=True,
        preprocess="scifar_sequence",
        splits=("train", "validation", "test"),
        official_sizes=dict(train=45000, validation=5000, test=10000),
    ),
    "listops": dict(
        # The loader's vocabulary has 18 entries (<pad>, <unk>, <eos>, 10 digits,
        # [MIN [MAX [MED [SM and X for "]"); the official S5 one-hot encodes 20 (IN_DIM = 20
        # in s5/dataloading.py; state-spaces max_vocab 20, "Actual size 18").
        vocab_size=20,
        num_classes=10,
        # S5 / state-spaces l_max 2048 (2047 tokens + <eos>). Deliberately not the original
        # LRA pipeline's max_length 2000 (no <eos>): the S5 paper's number used 2048.
        seq_len=2048,
        channels=None,
        has_validation=True,
        preprocess="token_sequence",
        splits=("train", "validation", "test"),
        official_sizes=dict(train=96000, validation=2000, test=2000),
    ),
    "imdb": dict(
        # Characters (code points, Python list(text)) seen >= 15 times in train + <pad>, <unk>,
        # <eos>: 135 (S5's hard-coded IN_DIM; state-spaces "min_freq=15: vocab ~ 135").
        # Deliberately not the original LRA's ByteTextEncoder (UTF-8 bytes, 257 ids, length
        # 1000-4000): the S5 paper ran the state-spaces loader.
        vocab_size=135,
        num_classes=2,
        seq_len=4096,
        channels=None,
        has_validation=False,
        preprocess="token_sequence",
        splits=("train", "test"),
        official_sizes=dict(train=25000, test=25000),
    ),
    "aan": dict(
        # Every character in train (both documents) + 3 specials. The release's texts are
        # Python bytes literals (b'...', printable ASCII only): 95 + 3 = 98, state-spaces'
        # "Full size 98". S5 one-hot encodes len(vocab) = 98 (IN_DIM in s5/dataloading.py);
        # state-spaces embeds 100 rows (max_vocab), which we do not follow.
        vocab_size=98,
        num_classes=2,
        seq_len=4000,
        channels=None,
        has_validation=True,
        preprocess="token_pair_sequence",
        splits=("train", "validation", "test"),
        official_sizes=dict(train=147086, validation=18090, test=17437),
    ),
    "lra_cifar": dict(
        vocab_size=None,
        num_classes=10,
        seq_len=1024,
        channels=1,
        has_validation=True,
        preprocess="lra_cifar_sequence",
        splits=("train", "validation", "test"),
        official_sizes=dict(train=45000, validation=5000, test=10000),
    ),
    "pathfinder32": dict(
        vocab_size=None,
        num_classes=2,
        seq_len=1024,
        channels=1,
        has_validation=True,
        preprocess="pathfinder_sequence",
        splits=("train", "validation", "test"),
        official_sizes=dict(train=160000, validation=20000, test=20000),
    ),
    "pathx": dict(
        vocab_size=None,
        num_classes=2,
        seq_len=16384,
        channels=1,
        has_validation=True,
        preprocess="pathfinder_sequence",
        splits=("train", "validation", "test"),
        official_sizes=dict(train=160000, validation=20000, test=20000),
    ),
    "speech_commands35": dict(
        vocab_size=None,
        num_classes=35,
        seq_len=16000,
        channels=1,
        has_validation=True,
        preprocess="speech_waveform",
        splits=("train", "validation", "test", "test_8khz"),
        official_sizes=dict(train=84843, validation=9981, test=11005, test_8khz=11005),
    ),
}

_PIXELS = {"sequence": ((784,), np.uint8), "label": ((), np.int64)}
RECORD_FIELDS = {
    "smnist": _PIXELS,
    "psmnist": _PIXELS,
    "scifar": {"sequence": ((1024, 3), np.uint8), "label": ((), np.int64)},
    "lra_cifar": {"sequence": ((1024,), np.uint8), "label": ((), np.int64)},
    "pathfinder32": {"sequence": ((1024,), np.uint8), "label": ((), np.int64)},
    "pathx": {"sequence": ((16384,), np.uint8), "label": ((), np.int64)},
    "listops": {"tokens": ((2048,), np.uint8), "length": ((), np.int64), "label": ((), np.int64)},
    "imdb": {"tokens": ((4096,), np.uint8), "length": ((), np.int64), "label": ((), np.int64)},
    "aan": {"tokens": ((2, 4000), np.uint8), "length": ((2,), np.int32), "label": ((), np.int64)},
    # audio: the normalised waveform, 16000 samples (8000 in test_8khz).
    "speech_commands35": {
        "audio": ((None,), np.float32),
        "length": ((), np.int64),
        "label": ((), np.int64),
    },
}


def _labels(batch):
    return np.asarray(batch["label"], np.int32)


def _full_lengths(x):
    return np.full((x.shape[0],), x.shape[1], np.int32)


def pixel_sequence(batch, image_size=None):
    """sMNIST / psMNIST: uint8 (b, 784) -> inputs (b, 784, 1) in [0, 1]."""
    del image_size
    x = np.asarray(batch["sequence"], np.float32)[..., None] / 255.0
    return {"inputs": x, "lengths": _full_lengths(x), "label": _labels(batch)}


def scifar_sequence(batch, image_size=None):
    """sCIFAR: uint8 (b, 1024, 3) -> per-channel normalised (b, 1024, 3)."""
    del image_size
    x = np.asarray(batch["sequence"], np.float32) / 255.0
    x = (x - np.float32(SCIFAR_MEAN)) / np.float32(SCIFAR_STD)
    return {"inputs": x.astype(np.float32), "lengths": _full_lengths(x), "label": _labels(batch)}


def lra_cifar_sequence(batch, image_size=None):
    """LRA Image: grayscale uint8 (b, 1024) -> (b, 1024, 1), Normalize(122.6/255, 61/255)."""
    del image_size
    x = np.asarray(batch["sequence"], np.float32)[..., None] / 255.0
    x = ((x - LRA_CIFAR_MEAN) / LRA_CIFAR_STD).astype(np.float32)
    return {"inputs": x, "lengths": _full_lengths(x), "label": _labels(batch)}


def pathfinder_sequence(batch, image_size=None):
    """Pathfinder / Path-X: uint8 (b, L) -> (b, L, 1) in [-1, 1] (Normalize(0.5, 0.5))."""
    del image_size
    x = np.asarray(batch["sequence"], np.float32)[..., None] / 255.0
    x = ((x - 0.5) / 0.5).astype(np.float32)
    return {"inputs": x, "lengths": _full_lengths(x), "label": _labels(batch)}


def token_sequence(batch, image_size=None):
    """ListOps / IMDB: token ids (b, L) int32, 0 = padding; lengths (b,) count <eos>."""
    del image_size
    return {
        "inputs": np.asarray(batch["tokens"], np.int32),
        "lengths": np.asarray(batch["length"], np.int32),
        "label": _labels(batch),
    }


def token_pair_sequence(batch, image_size=None):
    """AAN: two documents, token ids (b, 2, L) int32 and lengths (b, 2)."""
    return token_sequence(batch, image_size)


def speech_waveform(batch, image_size=None):
    """Speech Commands: normalised waveform (b, L) -> (b, L, 1) float32.

    lengths are the true clip lengths (before zero padding; halved, rounded up, at 8 kHz).
    The official model pooled over the whole padded clip: use L, not lengths, to match it.
    """
    del image_size
    x = np.asarray(batch["audio"], np.float32)[..., None]
    return {
        "inputs": x,
        "lengths": np.asarray(batch["length"], np.int32),
        "label": _labels(batch),
    }


PREPROCESSORS = {
    "pixel_sequence": pixel_sequence,
    "scifar_sequence": scifar_sequence,
    "lra_cifar_sequence": lra_cifar_sequence,
    "pathfinder_sequence": pathfinder_sequence,
    "token_sequence": token_sequence,
    "token_pair_sequence": token_pair_sequence,
    "speech_waveform": speech_waveform,
}
