"""S5 on LRA Retrieval (AAN, two documents of 4000 bytes; paper: 91.40 % test accuracy), the
official recipe (run_lra_aan.sh): two-tower head ([a, b, a - b, a*b] -> MLP), 6 layers, H 128,
P 256, J 16, dt_global, standard, lr 2 x 1e-3, wd 0.05, batch 32, 20 epochs of 147,086 pairs.

  python -m jaxml.data.prepare --dataset=aan --manual_dir=<lra_release>
  python -m train.s5 --config=train/configs/s5_aan.py
  python -m train.s5 --config=train/configs/s5_aan.py --config.data.mock=True  # smoke test
"""

from train.configs.s5_paper import paper_config


def get_config():
    return paper_config(
        dataset="aan",
        train_size=147_086,
        epochs=20,
        batch_size=32,
        num_classes=2,
        tokens=True,
        seed=5464368,
        model=dict(
            architecture="retrieval",
            n_layers=6,
            d_model=128,
            state_size=256,
            blocks=16,
            C_init="trunc_standard_normal",
            dropout=0.0,
        ),
        optimizer=dict(
            ssm_lr=1e-3, lr_factor=2.0, weight_decay=0.05, opt_config="standard", dt_global=True
        ),
    )
