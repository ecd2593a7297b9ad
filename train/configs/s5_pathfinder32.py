"""S5 on LRA Pathfinder (32x32, length 1024; paper: 95.33 % test accuracy), the official
recipe (run_lra_pathfinder.sh): 6 layers, H 192, P 256, J 8, BatchNorm momentum 0.9, standard,
lr 5 x 9e-4, wd 0.03, dropout 0.05, batch 64, 200 epochs of 160,000 images (80/10/10 split).

  python -m jaxml.data.prepare --dataset=pathfinder32 --manual_dir=<lra_release>
  python -m train.s5 --config=train/configs/s5_pathfinder32.py
  python -m train.s5 --config=train/configs/s5_pathfinder32.py --config.data.mock=True  # smoke
"""

from train.configs.s5_paper import paper_config


def get_config():
    return paper_config(
        dataset="pathfinder32",
        train_size=160_000,
        epochs=200,
        batch_size=64,
        num_classes=2,
        seed=8180844,
        model=dict(
            n_layers=6,
            d_model=192,
            state_size=256,
            blocks=8,
            bn_momentum=0.9,
            C_init="trunc_standard_normal",
            dropout=0.05,
        ),
        optimizer=dict(ssm_lr=9e-4, lr_factor=5.0, weight_decay=0.03, opt_config="standard"),
    )
