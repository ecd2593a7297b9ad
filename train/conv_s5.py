"""Train a ConvS5 (or ConvLSTM) next-frame video model; every eval rolls out long horizons.

  python -m train.conv_s5                       # ConvS5 on the embedded moving digits
  python -m train.conv_s5 --config=train/configs/conv_s5_moving_digits.py:convlstm
  python -m train.conv_s5 --config.data.name=bouncing_mnist   # Moving-MNIST (mnist prepared)

Writes to the workdir: checkpoints/ (resumed automatically), metrics.jsonl, tensorboard/,
strips/step_*.png (truth above prediction) and final_metrics.json.
"""

from pathlib import Path

from jaxml import parallel, tasks
from jaxml.tasks import video
from jaxml.training import cli

cli.define_flags(str(Path(__file__).parent / "configs" / "conv_s5_moving_digits.py"))


def main(config, workdir):
    mesh = parallel.make_mesh(config.mesh)
    tasks.train(video.build(config, mesh, workdir=workdir), config, workdir)


if __name__ == "__main__":
    cli.run_main(main)
