"""S5 on sequential digits: scikit-learn's 8x8 digits upsampled (bilinear) to 32x32 and read
pixel by pixel, a length-1024 task like sMNIST/sCIFAR that trains on a 2-core CPU.

The LRA-Image / sCIFAR recipe (prenorm BatchNorm, half_glu1, C lecun_normal, clip_eigs,
BfastandCdecay, lr_factor 4.5, weight decay 0.07, dropout 0.1, 1 warmup epoch, official
cosine) scaled down to a shared 2-core CPU (2 layers, H 32, P 32, J 4, batch 32), causal so
that it also streams. 1280 steps = 32 epochs of 40 steps, the cosine ending there: validation
accuracy plateaus from about step 800 (benchmarks/results/s5_sdigits_cpu.png); 8-14 min on
a shared 2-core CPU. `--config.total_steps=320` (8 epochs, 2-4 min) is the quick version
and stops short of convergence (benchmarks/results/s5_sdigits_320steps_cpu.json).
10 % of train (1437 images) is held out for validation; the reported number is the test
accuracy at the best-validation evaluation (final_metrics.json "best_val").
No data to prepare (generated locally). No paper number (sMNIST: 99.65 %). Measured here
(benchmarks/results/s5_sdigits_cpu.json, 3 seeds): see the README table.

  python -m train.s5 --config=train/configs/s5_sdigits.py
  python benchmarks/s5_sdigits.py            # 3 seeds of this and s5_psdigits -> JSON + PNG
"""

from train.configs import s5_mnist1d


def get_config():
    config = s5_mnist1d.get_config()
    config.data.name = "digits"
    config.data.preprocess = "image_classification_flat"
    config.data.image_size = 32
    config.data.validation_fraction = 0.1
    config.data.batch_size = 32
    config.data.eval_batch_size = 120

    config.model.d_model = 32
    config.model.state_size = 32
    config.model.blocks = 4
    config.model.n_layers = 2
    config.model.dropout = 0.1
    config.model.C_init = "lecun_normal"
    config.model.clip_eigs = True
    config.model.pooling = "mean"

    config.optimizer.ssm_lr = 2e-3
    config.optimizer.lr_factor = 4.5
    config.optimizer.weight_decay = 0.07
    config.optimizer.opt_config = "BfastandCdecay"
    config.optimizer.schedule = "official_cosine"
    config.optimizer.warmup_epochs = 1.0

    config.evals = ("accuracy", "best_checkpoint")
    # 32 epochs of 40 steps, evaluated every epoch: converged (see the docstring).
    config.total_steps = 1280
    config.log_every = 20
    config.eval_every = 40
    config.checkpoint_every = 80
    return config
