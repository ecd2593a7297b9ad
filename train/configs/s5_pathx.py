"""S5 on LRA Path-X (128x128, length 16384; paper: 98.58 % test accuracy), the official recipe
(run_lra_pathx.sh): 6 layers, H 128, P 256, J 16, C complex_normal, dt_min 1e-4, BatchNorm
momentum 0.9, BandCdecay, lr 3 x 6e-4, wd 0.06, batch 32, 75 epochs of 160,000 images.

  python -m jaxml.data.prepare --dataset=pathx --manual_dir=<lra_release>
  python -m train.s5 --config=train/configs/s5_pathx.py
  python -m train.s5 --config=train/configs/s5_pathx.py --config.data.mock=True  # smoke test
"""

from train.configs.s5_paper import paper_config


def get_config():
    return paper_config(
        dataset="pathx",
        train_size=160_000,
        epochs=75,
        batch_size=32,
        num_classes=2,
        seed=6429262,
        model=dict(
            n_layers=6,
            d_model=128,
            state_size=256,
            blocks=16,
            bn_momentum=0.9,
            C_init="complex_normal",
            dt_min=1e-4,
            dropout=0.0,
        ),
        optimizer=dict(ssm_lr=6e-4, lr_factor=3.0, weight_decay=0.06, opt_config="BandCdecay"),
    )
