"""S5 on sequential CIFAR-10 (colour, 1024 steps x 3 channels, mean/std normalised; paper:
90.10 % test accuracy). The official repo has no script for the pixel tasks; this is the
LRA-Image recipe (run_lra_cifar.sh: 6 layers, H 512, P 384, J 3, clip_eigs, C lecun_normal,
BfastandCdecay, lr 4.5 x 1e-3, wd 0.07, dropout 0.1, batch 50, 250 epochs) on the 3-channel
input, 45,000 training images (10 % held out for validation).

  python -m jaxml.data.prepare --dataset=scifar
  python -m train.s5 --config=train/configs/s5_scifar.py
  python -m train.s5 --config=train/configs/s5_scifar.py --config.data.mock=True  # smoke test
"""

from jaxml.data.sequence_tasks import TASK_SPECS
from train.configs import s5_lra_cifar


def get_config():
    config = s5_lra_cifar.get_config()
    config.data.name = "scifar"
    config.data.preprocess = TASK_SPECS["scifar"]["preprocess"]  # 3 channels, not grayscale
    return config
