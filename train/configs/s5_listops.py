"""S5 on LRA ListOps (paper: 62.15 % test accuracy), the official recipe
(lindermanlab/S5 bin/run_experiments/run_lra_listops.sh): 8 layers, H 128, P 16, J 8,
half_glu2, C lecun_normal, BfastandCdecay, lr 3 x 1e-3, wd 0.04, batch 50, 40 epochs of the
96,000 training sequences (length <= 2048, one-hot tokens, 10 classes).

  python -m jaxml.data.prepare --dataset=listops --manual_dir=<lra_release>
  python -m train.s5 --config=train/configs/s5_listops.py
  python -m train.s5 --config=train/configs/s5_listops.py --config.data.mock=True  # smoke test
"""

from train.configs.s5_paper import paper_config


def get_config():
    return paper_config(
        dataset="listops",
        train_size=96_000,
        epochs=40,
        batch_size=50,
        num_classes=10,
        tokens=True,
        seed=6554595,
        model=dict(
            n_layers=8,
            d_model=128,
            state_size=16,
            blocks=8,
            activation="half_glu2",
            C_init="lecun_normal",
            dropout=0.0,
        ),
        optimizer=dict(ssm_lr=1e-3, lr_factor=3.0, weight_decay=0.04, opt_config="BfastandCdecay"),
    )
