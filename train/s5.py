"""Train an S5 sequence classifier.

  python -m train.s5                                   # MNIST-1D, train/configs/s5_mnist1d.py
  python -m train.s5 --config=train/configs/s5_sdigits.py
  python -m train.s5 --config=train/configs/s5_listops.py --config.data.mock=True
  python -m train.s5 --config.total_steps=500 --config.mesh.data=-1 --workdir=runs/s5

Writes to the workdir: checkpoints/ (resumed automatically), best/ (the best-validation
state), metrics.jsonl, tensorboard/, and final_metrics.json ({"last": ..., "best_val": ...}).
The task (data, model, loss, evaluators) is jaxml.tasks.classification.
"""

from pathlib import Path

import jaxml.tasks
from jaxml import parallel
from jaxml.tasks import classification
from jaxml.training import cli

cli.define_flags(str(Path(__file__).parent / "configs" / "s5_mnist1d.py"))


def main(config, workdir):
    classification.validate(config)
    mesh = parallel.make_mesh(config.mesh)
    task = classification.build(config, mesh, workdir)
    return jaxml.tasks.train(task, config, workdir)


if __name__ == "__main__":
    cli.run_main(main)
