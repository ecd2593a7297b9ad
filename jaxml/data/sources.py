"""Where records come from: TFDS random-access sources (array_record), never downloaded at run time.

The embedded datasets (`mnist1d`, `digits`) are generated on this machine the
first time they are asked for. The S5 paper tasks (`builders.PAPER_TASK_BUILDERS`)
are built once from the user's files (`--manual_dir`) or prepared TFDS datasets.
Any other TFDS name must already be prepared in `data_dir` in array_record format;
if not, the error says how to prepare it. `mock=True` gives generated records of a
paper task's exact format instead (jaxml.data.mock), with no files at all.
"""

import contextlib
import fcntl
import os
from pathlib import Path

import tensorflow_datasets as tfds

from jaxml.data import builders
from jaxml.data import mock as mock_data

EMBEDDED_BUILDERS = {"mnist1d": builders.Mnist1d, "digits": builders.Digits}
EMBEDDED_BUILDERS |= {
    "moving_digits": builders.MovingDigits,
    "bouncing_mnist": builders.BouncingMnist,
}
PAPER_TASK_BUILDERS = builders.PAPER_TASK_BUILDERS
# Paper tasks read from the user's files rather than from another prepared TFDS dataset.
MANUAL_DIR_TASKS = ("listops", "aan", "pathfinder32", "pathx", "speech_commands35")


class DatasetUnavailableError(RuntimeError):
    """The dataset is not prepared in data_dir (or not in a random-access format)."""


def default_data_dir() -> str:
    return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def prepare_command(name: str, data_dir: str) -> str:
    manual = " --manual_dir=<downloaded files>" if name in MANUAL_DIR_TASKS else ""
    return f"python -m jaxml.data.prepare --dataset={name} --data_dir={data_dir}{manual}"


@contextlib.contextmanager
def _file_lock(path: Path):
    """Several local processes of one job may ask for the same embedded dataset at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prepare_dataset(
    name: str,
    data_dir: str | None = None,
    *,
    allow_download: bool = False,
    manual_dir: str | None = None,
):
    """Builds `name` into `data_dir` as array_record; returns the TFDS builder.

    Embedded datasets are generated locally. Paper tasks are built from `manual_dir`
    (the downloaded release files, or a data_dir holding their prepared TFDS source;
    default `data_dir`); their inputs are checked first, so a missing file raises
    MissingInputError before anything is written. Other TFDS datasets are downloaded by
    TFDS only when `allow_download=True` (the `jaxml.data.prepare` command).
    """
    data_dir = data_dir or default_data_dir()
    if name not in EMBEDDED_BUILDERS and not allow_download:
        raise DatasetUnavailableError(
            f"dataset {name!r} is not embedded; prepare it with: {prepare_command(name, data_dir)}"
        )
    if name in PAPER_TASK_BUILDERS:
        PAPER_TASK_BUILDERS[name].check_inputs(manual_dir, data_dir)
    # The builder is made under the lock: one made before another process finished
    # preparing would keep the stale dataset info (no splits).
    with _file_lock(Path(data_dir) / f".{name}.lock"):
        if name in EMBEDDED_BUILDERS:
            builder = EMBEDDED_BUILDERS[name](data_dir=data_dir, file_format="array_record")
        elif name in PAPER_TASK_BUILDERS:
            builder = PAPER_TASK_BUILDERS[name](
                data_dir=data_dir,
                file_format="array_record",
                input_dir=manual_dir or data_dir,
            )
        else:
            builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
        if not builder.is_prepared():
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(verify_ssl=True)
            )
    return builder


def data_source(name: str, split: str, data_dir: str | None = None, mock: bool = False):
    """A random-access source (len, __getitem__) of dict records for `name`/`split`.

    With `mock=True`, a paper task's generated stand-in (jaxml.data.mock): same record
    format, no files read or written. Embedded datasets are made here anyway, so for them
    mock=True gives the real records.
    """
    if mock and name not in EMBEDDED_BUILDERS:
        if name not in PAPER_TASK_BUILDERS:
            raise DatasetUnavailableError(
                f"no mock data for {name!r}; mock datasets: {', '.join(PAPER_TASK_BUILDERS)}"
            )
        try:
            return mock_data.mock_source(name, split)
        except ValueError as e:
            raise DatasetUnavailableError(str(e)) from None
    data_dir = data_dir or default_data_dir()
    if name in EMBEDDED_BUILDERS:
        builder = prepare_dataset(name, data_dir)
    else:
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError:
            raise DatasetUnavailableError(
                f"unknown dataset {name!r}: neither embedded ({', '.join(EMBEDDED_BUILDERS)}) "
                "nor a TFDS dataset name"
            ) from None
        if not builder.is_prepared():
            raise DatasetUnavailableError(
                f"dataset {name!r} is not prepared in {data_dir}. "
                "Nothing is downloaded at run time; "
                f"prepare it once with: {prepare_command(name, data_dir)}"
            )
        file_format = builder.info.file_format
        if file_format not in (tfds.core.FileFormat.ARRAY_RECORD, tfds.core.FileFormat.PARQUET):
            raise DatasetUnavailableError(
                f"dataset {name!r} in {data_dir} is stored as {file_format}, which has no random "
                "access; re-prepare it in another data_dir with: "
                f"{prepare_command(name, '<new_dir>')}"
            )
    if split not in builder.info.splits:
        raise DatasetUnavailableError(
            f"dataset {name!r} has no split {split!r}; it has {sorted(builder.info.splits)}"
        )
    return builder.as_data_source(split=split)
