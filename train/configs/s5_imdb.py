"""S5 on LRA Text (IMDB, byte level, length 4096; paper: 89.31 % test accuracy), the official
recipe (run_lra_imdb.sh): 6 layers, H 256, P 192, J 12, half_glu2, C lecun_normal,
dt_global, standard, lr 4 x 1e-3, wd 0.07, dropout 0.1, batch 50, 35 epochs of 25,000
reviews, no warmup. IMDB has no validation split: like the paper, we report the maximum
test accuracy over the per-epoch evaluations (final_metrics.json "max_test").

  python -m jaxml.data.prepare --dataset=imdb
  python -m train.s5 --config=train/configs/s5_imdb.py
  python -m train.s5 --config=train/configs/s5_imdb.py --config.data.mock=True  # smoke test
"""

from train.configs.s5_paper import paper_config


def get_config():
    return paper_config(
        dataset="imdb",
        train_size=25_000,
        epochs=35,
        batch_size=50,
        num_classes=2,
        tokens=True,
        validation=False,
        seed=8825365,
        model=dict(
            n_layers=6,
            d_model=256,
            state_size=192,
            blocks=12,
            activation="half_glu2",
            C_init="lecun_normal",
            dropout=0.1,
        ),
        optimizer=dict(
            ssm_lr=1e-3,
            lr_factor=4.0,
            weight_decay=0.07,
            opt_config="standard",
            dt_global=True,
            warmup_epochs=0.0,
        ),
    )
