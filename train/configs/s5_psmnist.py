"""S5 on permuted sequential MNIST (one fixed permutation of the 784 pixels, recorded in the
dataset builder; paper: 98.67 % test accuracy). No official script; our recipe (unverified
against the paper's appendix): 4 layers, H 128, P 128, J 2, dropout 0.15, standard,
lr 4 x 1e-3, wd 0.01, batch 50, 150 epochs of 54,000 images (10 % held out for validation).

  python -m jaxml.data.prepare --dataset=psmnist
  python -m train.s5 --config=train/configs/s5_psmnist.py
  python -m train.s5 --config=train/configs/s5_psmnist.py --config.data.mock=True  # smoke test
"""

from train.configs.s5_paper import paper_config


def get_config():
    return paper_config(
        dataset="psmnist",
        train_size=54_000,
        epochs=150,
        batch_size=50,
        num_classes=10,
        seed=0,
        model=dict(n_layers=4, d_model=128, state_size=128, blocks=2, dropout=0.15),
        optimizer=dict(ssm_lr=1e-3, lr_factor=4.0, weight_decay=0.01, opt_config="standard"),
    )
