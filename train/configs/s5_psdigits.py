"""S5 on permuted sequential digits: s5_sdigits with one fixed permutation of the 1024 pixel
positions (jaxml.tasks.classification.fixed_permutation, seed PERMUTATION_SEED), the psMNIST
analogue. Same recipe, length (1280 steps), validation and reporting as s5_sdigits. It is
the slower of the two to converge: at 320 steps it was still climbing (75.9 % test); with
1280 its validation accuracy plateaus from about step 800 (benchmarks/results/
s5_sdigits_cpu.png). No paper number (psMNIST 98.67 %).

  python -m train.s5 --config=train/configs/s5_psdigits.py
"""

from train.configs import s5_sdigits


def get_config():
    config = s5_sdigits.get_config()
    config.data.permute = True
    return config
