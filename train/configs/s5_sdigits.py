"""S5 on sequential digits: scikit-learn's 8x8 digits upsampled (bilinear) to 32x32 and read
pixel by pixel, a length-1024 sequence task that exercises the scan (like sMNIST, on a CPU budget).

  python -m train.s5 --config=train/configs/s5_sdigits.py
"""

from train.configs import s5_mnist1d


def get_config():
    config = s5_mnist1d.get_config()
    config.data.name = "digits"
    config.data.preprocess = "image_classification_flat"
    config.data.image_size = 32
    config.data.batch_size = 32
    config.data.eval_batch_size = 40
    config.model.pooling = "mean"
    config.total_steps = 2000
    config.eval_every = 500
    return config
