"""S5 on Speech Commands 35 (raw 16 kHz audio, length 16000; paper: 96.52 % test accuracy, and
94.53 % on the 8 kHz test with step_rescale 2 and no retraining), the official recipe
(run_speech35.sh): 6 layers, H 96, P 128, J 16, C lecun_normal, noBCdecay, lr 4 x 2e-3,
wd 0.04, dropout 0.1, batch 16, 40 epochs of 84,843 clips. Every evaluation also runs the
`test_8khz` split (every other sample) with Δ scaled by 2: `test_8khz_accuracy`.

  python -m jaxml.data.prepare --dataset=speech_commands35 --manual_dir=<speech_commands_v0.02>
  python -m train.s5 --config=train/configs/s5_speech35.py
  python -m train.s5 --config=train/configs/s5_speech35.py --config.data.mock=True  # smoke
"""

from train.configs.s5_paper import paper_config


def get_config():
    return paper_config(
        dataset="speech_commands35",
        train_size=84_843,
        epochs=40,
        batch_size=16,
        num_classes=35,
        seed=4062966,
        test_splits=("test", "test_8khz"),
        eval_step_rescale={"test_8khz": 2.0},
        model=dict(
            n_layers=6,
            d_model=96,
            state_size=128,
            blocks=16,
            C_init="lecun_normal",
            dropout=0.1,
        ),
        optimizer=dict(ssm_lr=2e-3, lr_factor=4.0, weight_decay=0.04, opt_config="noBCdecay"),
    )
