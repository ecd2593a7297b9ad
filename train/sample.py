"""Sample images from a trained diffusion checkpoint (EMA params), batch sharded over all devices.

  python -m train.sample --workdir=runs/diffusion_digits --num_samples=1000
  python -m train.sample --workdir=runs/diffusion_digits --sampler=heun \
      --config.sampler.num_steps=35
  python -m train.sample --workdir=runs/cond --config.sampler.guidance=2 --label=3

Model and sampler settings come from the config saved with the checkpoint;
`--config.key=value` (or `--config.key value`) overrides fields of it. `--config=FILE` is
an error when the checkpoint has a saved config (see jaxml/tasks/diffusion_sampling.py).
Any --num_samples: micro-batches of config.eval.batch_size run through one compiled
program and are written as they come to <out>/samples_<start>.npz (images in [-1, 1],
labels, indices), plus <out>/samples.png (a grid) and <out>/info.json (sampler, NFE, and
for digits models `metrics.evaluate_digits`: FD against train/test with the floors at the
same N, KID, precision/recall, memorisation rate).
"""

import logging
import sys
from pathlib import Path

import jax
from absl import flags

from jaxml.tasks import diffusion_sampling
from jaxml.training import cli

cli.define_flags(str(Path(__file__).parent / "configs" / "diffusion_digits.py"))
flags.DEFINE_integer("num_samples", 256, "How many images (any count).")
flags.DEFINE_string("sampler", None, "euler | heun | stochastic | restart (default: the config's).")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.DEFINE_string("out", None, "Output folder (default <workdir>/sample_<step>_<sampler>).")
flags.DEFINE_integer("seed", 0, "Seed of the latents and of the sampler's noise.")
flags.DEFINE_integer("label", None, "Class of every image (conditional models; default cycles).")
log = logging.getLogger("train.sample")


def main(config, workdir):
    fl = flags.FLAGS
    info = diffusion_sampling.run(
        config,
        workdir,
        sys.argv[1:],
        num_samples=fl.num_samples,
        step=fl.step,
        sampler=fl.sampler,
        out=fl.out,
        seed=fl.seed,
        label=fl.label,
    )
    if jax.process_index() == 0:
        print(
            f"{info['num_samples']} samples ({info['sampler']}, NFE {info['nfe']}) in {info['out']}"
            + (
                f"; FD-digits {info['fd_digits']:.3f} (real digits at this N: "
                f"{info['digits_evaluation']['fd_train_floor']:.3f}), KID "
                f"{info['digits_evaluation']['kid_train']:.5f}"
                if "fd_digits" in info
                else ""
            )
        )


if __name__ == "__main__":
    cli.run_main(main)
