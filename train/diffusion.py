"""Train a diffusion / PFGM++ image model; every eval runs the evaluators in config.evals.

  python -m train.diffusion                                 # PFGM++ D=128 on embedded 8x8 digits
  python -m train.diffusion --config=train/configs/diffusion_digits.py:edm      # D = inf (EDM)
  python -m train.diffusion --config=train/configs/diffusion_digits.py:pfgmpp16 # 16x16 digits
  python -m train.diffusion --config=train/configs/diffusion_digits.py:cond     # class-conditional
  python -m train.diffusion --config=train/configs/diffusion_cifar10.py         # needs CIFAR-10

Writes to the workdir: checkpoints/ (resumed automatically), metrics.jsonl,
tensorboard/, samples/step_*.png (a grid of EMA samples per eval) and
final_metrics.json. The task itself is jaxml/tasks/diffusion.py.
"""

from pathlib import Path

import jax

from jaxml import parallel, tasks
from jaxml.tasks import diffusion
from jaxml.training import cli

cli.define_flags(str(Path(__file__).parent / "configs" / "diffusion_digits.py"))


def main(config, workdir):
    mesh = parallel.make_mesh(config.mesh)
    final = tasks.train(diffusion.build(config, mesh, workdir=workdir), config, workdir)
    if final is not None and jax.process_index() == 0 and "samples_grid" in config.evals:
        print(f"samples in {workdir / 'samples'}")


if __name__ == "__main__":
    cli.run_main(main)
