"""Pathfinder / Path-X from PNG folders + metadata files; Speech Commands 35 from WAV + lists.

References: state-spaces PathFinderDataset (metadata/<k>.npy read in numeric order of k,
fields 0/1 = folder/file, field 3 = label; grayscale; ToTensor + Normalize(0.5, 0.5);
80/10/10 with int(0.1 n) val and test) and S5 sc.py `_process_all` (labels = index in its
ALL_CLASSES list, int16 / 2**30, zero-pad to 16000, per-time-step train mean / unbiased
std, (x - mean) / (std + 1e-5); 8 kHz = x[::2]).
"""

import subprocess
import sys

import numpy as np
import pytest
from paper_task_fakes import write_pathfinder, write_wav

from jaxml import data
from jaxml.data import preprocess, sources
from jaxml.data.builders.speech_commands import SPEECH_WORDS
from jaxml.data.sequence_tasks import RECORD_FIELDS


def _all(name, split, data_dir):
    source = data.data_source(name, split, str(data_dir))
    return [source[i] for i in range(len(source))]


def _batch(records):
    return {k: np.stack([np.asarray(r[k]) for r in records]) for k in records[0]}


@pytest.mark.parametrize("name,folder,resolution,n", [
    ("pathfinder32", "pathfinder32", 32, 23),
    ("pathx", "pathfinder128", 128, 10),
])  # fmt: skip
def test_pathfinder_folders_to_sequences(tmp_path, name, folder, resolution, n):
    rng = np.random.default_rng(resolution)
    images = rng.integers(0, 256, size=(n, resolution, resolution), dtype=np.uint8)
    labels = rng.integers(0, 2, size=n)
    level = tmp_path / "lra_release" / folder / "curv_contour_length_14"
    # Two images per metadata file: pathfinder32 has metadata/0..11.npy ("10" < "2" as text).
    write_pathfinder(level, images, labels, per_metadata_file=2)
    sources.prepare_dataset(
        name, str(tmp_path / "out"), allow_download=True, manual_dir=str(tmp_path)
    )
    splits = {s: _all(name, s, tmp_path / "out") for s in ("train", "validation", "test")}
    cut = int(0.1 * n)
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [n - 2 * cut, cut, cut]
    flat = images.reshape(n, -1)
    seen = []
    for records in splits.values():
        for r in records:
            for field, (shape, dtype) in RECORD_FIELDS[name].items():
                assert np.asarray(r[field]).shape == shape and np.asarray(r[field]).dtype == dtype
            i = next(i for i in range(n) if (flat[i] == r["sequence"]).all())
            assert r["label"] == labels[i]
            seen.append(i)
    assert sorted(seen) == list(range(n))
    # The documented cut: samples in metadata order (numeric k), RandomState(42) permutation,
    # train first, then validation, then test.
    order = np.random.RandomState(42).permutation(n)
    for split, part in (("validation", order[n - 2 * cut : n - cut]), ("test", order[n - cut :])):
        got = {r["sequence"].tobytes() for r in splits[split]}
        assert got == {flat[i].tobytes() for i in part}, split
    batch = preprocess.get("pathfinder_sequence")(_batch(splits["train"]))
    assert batch["inputs"].shape == (n - 2 * cut, resolution**2, 1)
    expected = np.stack([r["sequence"] for r in splits["train"]])[..., None] / 255.0 * 2 - 1
    np.testing.assert_allclose(batch["inputs"], expected, atol=1e-6)
    assert batch["inputs"].min() >= -1 and batch["inputs"].max() <= 1


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech_commands_v0.02")
    rng = np.random.default_rng(0)
    clips = {}
    for w, word in enumerate(SPEECH_WORDS):
        for j in range(1 + (w in (0, 17, 34))):  # a second clip for bed, backward, zero
            length = 16000 if (w + j) % 3 else 9001
            clips[f"{word}/c{j}.wav"] = rng.integers(-3000, 3000, size=length).astype(np.int16)
    for relative, samples in clips.items():
        write_wav(root / relative, samples)
    write_wav(root / "_background_noise_/noise.wav", np.zeros(32000, np.int16))
    (root / "validation_list.txt").write_text("bed/c1.wav\nzero/c1.wav\n")
    (root / "testing_list.txt").write_text("backward/c1.wav\nyes/c0.wav\nno/c0.wav\n")
    return root, clips


def test_speech_commands_splits_labels_and_normalisation(speech_dir, tmp_path):
    root, clips = speech_dir
    sources.prepare_dataset(
        "speech_commands35", str(tmp_path), allow_download=True, manual_dir=str(root)
    )
    splits = {
        s: _all("speech_commands35", s, tmp_path)
        for s in ("train", "validation", "test", "test_8khz")
    }
    assert [len(splits[s]) for s in ("train", "validation", "test", "test_8khz")] == [33, 2, 3, 3]
    # Independent reference: every train clip padded, scaled by 2**-30, statistics per step.
    test_files = ["yes/c0.wav", "no/c0.wav", "backward/c1.wav"]
    val_files = ["bed/c1.wav", "zero/c1.wav"]
    train_files = [f for f in clips if f not in test_files + val_files]
    padded = {
        f: np.pad(c.astype(np.float64), (0, 16000 - len(c))) / 2**30 for f, c in clips.items()
    }
    stack = np.stack([padded[f] for f in train_files])
    mean, std = stack.mean(0), stack.std(0, ddof=1)
    for split, files in (("validation", val_files), ("test", test_files)):
        records = splits[split]
        labels = sorted(SPEECH_WORDS.index(f.split("/")[0]) for f in files)
        assert sorted(r["label"] for r in records) == labels
        for r in records:
            f = next(f for f in files if SPEECH_WORDS.index(f.split("/")[0]) == r["label"])
            expected = (padded[f] - mean) / (std + 1e-5)
            np.testing.assert_allclose(r["audio"], expected, rtol=1e-5, atol=1e-6)
            assert r["length"] == len(clips[f])
    assert {"bed": 0, "backward": 17, "zero": 34} == {
        w: SPEECH_WORDS.index(w) for w in ("bed", "backward", "zero")
    }
    for r in splits["train"]:
        assert r["audio"].shape == (16000,) and r["audio"].dtype == np.float32
        assert 0 <= r["label"] < 35
    for full, half in zip(splits["test"], splits["test_8khz"]):
        assert half["audio"].shape == (8000,) and half["label"] == full["label"]
        np.testing.assert_array_equal(half["audio"], full["audio"][::2])
        assert half["length"] == -(-full["length"] // 2)
    batch = preprocess.get("speech_waveform")(_batch(splits["test_8khz"]))
    assert batch["inputs"].shape == (3, 8000, 1) and batch["inputs"].dtype == np.float32
    assert batch["lengths"].dtype == np.int32 and batch["label"].dtype == np.int32


@pytest.mark.slow  # a fresh interpreter importing jax: ~10 s on the shared CPU
def test_prepare_cli_missing_file_exit_2_names_it_and_writes_nothing(speech_dir, tmp_path):
    root, _ = speech_dir
    bad = tmp_path / "sc"
    bad.mkdir()
    (bad / "validation_list.txt").write_text("")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "jaxml.data.prepare", "--dataset=speech_commands35"]
    done = subprocess.run(
        [*cmd, f"--manual_dir={bad}", f"--data_dir={out}"], capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    assert "testing_list.txt not found" in done.stderr
    assert "speech_commands_v0.02.tar.gz" in done.stderr
    assert not out.exists()


def test_prepare_main_missing_lra_file_exit_2(tmp_path, capsys):
    import importlib

    from absl import flags

    import jaxml.data

    prepare = importlib.import_module("jaxml.data.prepare")
    # The package's function is prepare_dataset: importing the module no longer rebinds it.
    assert jaxml.data.prepare_dataset is sources.prepare_dataset

    out = tmp_path / "out"
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["prepare", "--dataset=listops", f"--manual_dir={tmp_path}", f"--data_dir={out}"])
    try:
        with pytest.raises(SystemExit) as exit_info:
            prepare.main([])
    finally:
        flags.FLAGS.unparse_flags()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "listops-1000/basic_train.tsv not found" in err and "lra_release.gz" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
