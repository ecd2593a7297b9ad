"""Prepare a TFDS dataset as array_record so jaxml can read it without TensorFlow.

  python -m jaxml.data.prepare --dataset=cifar10 --data_dir=~/tensorflow_datasets

This is the only place jaxml lets TFDS download; training never does. Some TFDS
builders need TensorFlow to *prepare* (not to read); install it for this step only.
"""

import sys

from absl import app, flags

from jaxml.data import sources

_DATASET = flags.DEFINE_string(
    "dataset", None, "TFDS dataset name, e.g. mnist, cifar10.", required=True
)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Where to write (default $TFDS_DATA_DIR or ~/tensorflow_datasets)."
)


def main(argv):
    del argv
    data_dir = _DATA_DIR.value or sources.default_data_dir()
    try:
        builder = sources.prepare(_DATASET.value, data_dir, allow_download=True)
    except Exception as e:  # noqa: BLE001 - any failure here is reported as one line
        sys.exit(f"error: could not prepare {_DATASET.value!r} in {data_dir}: {e}")
    print(
        f"prepared {_DATASET.value} at {builder.data_dir}: "
        + ", ".join(f"{k}={v.num_examples}" for k, v in builder.info.splits.items())
    )


if __name__ == "__main__":
    app.run(main)
