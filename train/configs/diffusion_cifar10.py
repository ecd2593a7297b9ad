"""CIFAR-10 (unconditional) with EDM's DDPM++ network and PFGM++ D=2048, EDM's training settings.

Needs CIFAR-10 prepared once (nothing is downloaded at training time):
  python -m jaxml.data.prepare --dataset=cifar10 --data_dir=~/tensorflow_datasets
  python -m train.diffusion --config=train/configs/diffusion_cifar10.py --workdir=runs/cifar10
  python -m train.diffusion --config=train/configs/diffusion_cifar10.py:edm    # D = inf

FID needs Inception weights and reference statistics you provide, made once with
  python -m jaxml.diffusion.fid convert --src=pt_inception-2015-12-05-6726825d.pth --out=incep.npz
  python -m jaxml.diffusion.fid stats --dataset=cifar10 --split=train --weights=incep.npz \
      --out=cifar10_train_stats.npz
then set --config.eval.inception_weights and --config.eval.fid_reference_stats to report it
at each eval. On a GPU/TPU add
--config.model.dtype=bfloat16 (bf16 compute, fp32 params).
"""

import ml_collections

from jaxml.diffusion import augment
from jaxml.models.unet import unet_config
from train.configs import diffusion_digits


def get_config(variant: str = "pfgmpp"):
    if variant not in ("pfgmpp", "edm"):
        raise ValueError(f"unknown variant {variant!r}; choose pfgmpp or edm")
    config = diffusion_digits.get_config("pfgmpp" if variant == "pfgmpp" else "edm")
    config.data.name = "cifar10"
    config.data.image_size = 32
    config.data.channels = 3
    config.data.batch_size = 512

    preset = unet_config("cifar10_ddpmpp")
    for key, value in preset.items():
        config.model[key] = value
    config.model.preset = "cifar10_ddpmpp"

    config.diffusion.D = 2048 if variant == "pfgmpp" else None

    # EDM's non-leaky augmentation (config F): the geometric pipeline with p = 0.12; the
    # network gets the 9 augmentation labels (zero when sampling). --config.augment.p=0: off.
    config.augment = ml_collections.ConfigDict({**augment.DEFAULTS, **augment.CIFAR10_PIPELINE})
    config.model.augment_dim = augment.augment_dim(**augment.CIFAR10_PIPELINE)

    # EDM: Adam lr 1e-3, 10 Mimg warm-up, EMA half-life 500 kimg (ramp-up 0.05), 200 Mimg total.
    config.optimizer.lr = 1e-3
    config.optimizer.warmup_steps = 10_000_000 // 512
    config.optimizer.grad_clip = 0.0
    config.optimizer.decay = "constant"  # the digits recipe decays; EDM does not
    config.ema.halflife_kimg = 500.0
    config.total_steps = 200_000_000 // 512
    config.log_every = 100
    config.eval_every = 10_000
    config.checkpoint_every = 5_000
    config.checkpoint_keep_period = 50_000
    config.eval.num_samples = 10_000
    config.eval.batch_size = 256
    config.evals = ("samples_grid", "fid")  # FID only when eval.fid_reference_stats is set
    config.eval.grid_scale = 2
    config.fsdp_min_size = 2**16
    return config
