"""S5 on LRA Image (grayscale CIFAR-10 pixel by pixel, length 1024; paper: 88.00 % test
accuracy), the official recipe (run_lra_cifar.sh): 6 layers, H 512, P 384, J 3, clip_eigs,
C lecun_normal, BfastandCdecay, lr 4.5 x 1e-3, wd 0.07, dropout 0.1, batch 50, 250 epochs of
45,000 images (5,000 held out for validation).

  python -m jaxml.data.prepare --dataset=lra_cifar
  python -m train.s5 --config=train/configs/s5_lra_cifar.py
  python -m train.s5 --config=train/configs/s5_lra_cifar.py --config.data.mock=True  # smoke
"""

from train.configs.s5_paper import paper_config


def get_config():
    return paper_config(
        dataset="lra_cifar",
        train_size=45_000,
        epochs=250,
        batch_size=50,
        num_classes=10,
        seed=16416,
        model=dict(
            n_layers=6,
            d_model=512,
            state_size=384,
            blocks=3,
            clip_eigs=True,
            C_init="lecun_normal",
            dropout=0.1,
        ),
        optimizer=dict(ssm_lr=1e-3, lr_factor=4.5, weight_decay=0.07, opt_config="BfastandCdecay"),
    )
