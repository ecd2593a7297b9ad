"""Prepare a dataset as array_record so jaxml can read it without TensorFlow.

  python -m jaxml.data.prepare --dataset=cifar10 --data_dir=~/tensorflow_datasets
  python -m jaxml.data.prepare --dataset=listops --manual_dir=~/lra_release

This is the only place jaxml lets TFDS download; training never does. Some TFDS
builders need TensorFlow to *prepare* (not to read); install it for this step only.

The S5 paper tasks (smnist, psmnist, scifar, lra_cifar, imdb from the TFDS mnist /
cifar10 / imdb_reviews prepared first; listops, aan, pathfinder32, pathx from the LRA
release; speech_commands35 from the Speech Commands v0.02 archive) are built from
--manual_dir (default: --data_dir). A missing input file or source dataset is one
error line naming it and where it comes from, exit status 2, nothing written.
"""

import os
import sys

from absl import app, flags

from jaxml.data import sources
from jaxml.data.builders.task_inputs import MissingInputError

_DATASET = flags.DEFINE_string(
    "dataset", None, "Dataset name, e.g. mnist, cifar10, listops, pathx.", required=True
)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Where to write (default $TFDS_DATA_DIR or ~/tensorflow_datasets)."
)
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir",
    None,
    "Paper tasks: the downloaded files (extracted lra_release, extracted Speech Commands "
    "v0.02), or the data_dir holding the TFDS source dataset (default: --data_dir).",
)


def main(argv):
    del argv
    # `--data_dir=~/x` reaches us unexpanded (the shell expands ~ only at a word's start).
    data_dir = os.path.expanduser(_DATA_DIR.value or sources.default_data_dir())
    manual_dir = os.path.expanduser(_MANUAL_DIR.value) if _MANUAL_DIR.value else None
    try:
        builder = sources.prepare_dataset(
            _DATASET.value, data_dir, allow_download=True, manual_dir=manual_dir
        )
    except (MissingInputError, sources.DatasetUnavailableError) as e:
        print(f"error: cannot prepare {_DATASET.value!r}: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 - any failure here is reported as one line
        sys.exit(f"error: could not prepare {_DATASET.value!r} in {data_dir}: {e}")
    print(
        f"prepared {_DATASET.value} at {builder.data_dir}: "
        + ", ".join(f"{k}={v.num_examples}" for k, v in builder.info.splits.items())
    )


if __name__ == "__main__":
    app.run(main)
