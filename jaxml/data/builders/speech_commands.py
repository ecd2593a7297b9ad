"""Speech Commands v0.02, all 35 words, raw 16 kHz waveforms (the S5 paper's SC35 task).

--manual_dir is the extracted speech_commands_v0.02.tar.gz (SPEECH_URL): one folder of
16-bit mono 16 kHz WAV files per word, validation_list.txt and testing_list.txt (paths
"word/file.wav"); every other file of the 35 word folders is train (_background_noise_
is not used). Official sizes: 84843 / 9981 / 11005.

As the official loader (S5 `s5/dataloaders/sc.py`, `_process_all`): labels are the
index in SPEECH_WORDS (its order, not alphabetical); a clip is int16 / 2**30 (it divides
torchaudio's float waveform by 2**15 again), zero-padded to 16000 samples, and every
time step t is normalised with the train split's mean and unbiased std at t:
(x_t - mean_t) / (std_t + 1e-5). Records store that float32 waveform and the true clip
length; `test_8khz` is every other sample of `test` (8000 samples, length ceil(n / 2)).
"""

import wave
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from tqdm import tqdm

from jaxml.data.builders.task_inputs import SPEECH_URL, MissingInputError, record_features
from jaxml.data.sequence_tasks import SPEECH_SCALE, SPEECH_STD_EPS

CLIP_LENGTH = 16000
SAMPLE_RATE = 16000
SPEECH_WORDS = (
    "bed", "cat", "down", "five", "forward", "go", "house", "left", "marvin", "no", "on",
    "right", "sheila", "tree", "up", "visual", "yes", "backward", "bird", "dog", "eight",
    "follow", "four", "happy", "learn", "nine", "off", "one", "seven", "six", "stop",
    "three", "two", "wow", "zero",
)  # fmt: skip


def read_wav(path: Path) -> np.ndarray:
    """int16 samples of a 16-bit mono 16 kHz WAV file, cut to CLIP_LENGTH."""
    with wave.open(str(path), "rb") as f:
        if (f.getnchannels(), f.getsampwidth(), f.getframerate()) != (1, 2, SAMPLE_RATE):
            raise ValueError(
                f"{path}: expected 16-bit mono {SAMPLE_RATE} Hz, got {f.getnchannels()} "
                f"channel(s), {8 * f.getsampwidth()} bit, {f.getframerate()} Hz"
            )
        samples = np.frombuffer(f.readframes(f.getnframes()), "<i2")
    return samples[:CLIP_LENGTH]


def split_files(root: Path) -> dict[str, list[tuple[str, int]]]:
    """{"train"|"validation"|"test": [("word/file.wav", label)]}, files sorted per word."""
    lists = {}
    for split, list_name in (("validation", "validation_list.txt"), ("test", "testing_list.txt")):
        lists[split] = {line.strip() for line in (root / list_name).read_text().splitlines()}
    files = {"train": [], "validation": [], "test": []}
    for label, word in enumerate(SPEECH_WORDS):
        for path in sorted((root / word).glob("*.wav")):
            relative = f"{word}/{path.name}"
            split = next((s for s in ("validation", "test") if relative in lists[s]), "train")
            files[split].append((relative, label))
    return files


def time_step_statistics(root: Path, files) -> tuple[np.ndarray, np.ndarray]:
    """Per-time-step mean and unbiased std over padded train clips (int16 * SPEECH_SCALE)."""
    total = np.zeros(CLIP_LENGTH, np.int64)
    total_sq = np.zeros(CLIP_LENGTH, np.int64)  # < 2**30 * 2**17 clips: no overflow
    for relative, _ in tqdm(files, desc="speech_commands35: train statistics", unit="clip"):
        samples = read_wav(root / relative).astype(np.int64)
        total[: len(samples)] += samples
        total_sq[: len(samples)] += samples * samples
    n = len(files)
    mean = total / n
    var = (total_sq - n * mean * mean) / max(n - 1, 1)
    return mean * SPEECH_SCALE, np.sqrt(np.maximum(var, 0.0)) * SPEECH_SCALE


class SpeechCommands35(tfds.core.GeneratorBasedBuilder):
    """Speech Commands v0.02, 35 words (see module docstring)."""

    name = "speech_commands35"
    VERSION = tfds.core.Version("1.0.0")

    def __init__(self, *, input_dir=None, **kwargs):
        super().__init__(**kwargs)
        self._input_dir = input_dir  # the extracted release files (--manual_dir)

    @classmethod
    def root(cls, manual_dir) -> Path:
        if manual_dir is None:
            raise MissingInputError(
                f"speech_commands35 is read from {SPEECH_URL}: download it, extract it "
                "(mkdir sc && tar -xzf speech_commands_v0.02.tar.gz -C sc) and pass "
                "--manual_dir=sc"
            )
        root = Path(manual_dir).expanduser()
        needed = ["validation_list.txt", "testing_list.txt", *SPEECH_WORDS]
        for name in needed:
            if not (root / name).exists():
                raise MissingInputError(
                    f"{root / name} not found; --manual_dir must be the extracted "
                    f"speech_commands_v0.02.tar.gz ({SPEECH_URL})"
                )
        return root

    @classmethod
    def check_inputs(cls, manual_dir, data_dir):
        del data_dir
        cls.root(manual_dir)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=record_features(self.name),
            disable_shuffling=True,
            homepage="https://arxiv.org/abs/1804.03209",
        )

    def _split_generators(self, dl_manager):
        root = self.root(self._input_dir)
        files = split_files(root)
        mean, std = time_step_statistics(root, files["train"])
        generate = lambda split, step=1: self._generate_examples(
            root, files[split], mean, std, step
        )  # noqa: E731
        return {
            "train": generate("train"),
            "validation": generate("validation"),
            "test": generate("test"),
            "test_8khz": generate("test", 2),
        }

    def _generate_examples(self, root, files, mean, std, step):
        for i, (relative, label) in enumerate(files):
            samples = read_wav(root / relative)
            padded = np.zeros(CLIP_LENGTH, np.float64)
            padded[: len(samples)] = samples * SPEECH_SCALE
            audio = ((padded - mean) / (std + SPEECH_STD_EPS))[::step].astype(np.float32)
            yield i, {"audio": audio, "length": -(-len(samples) // step), "label": label}
