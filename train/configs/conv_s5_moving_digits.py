"""ConvS5 next-frame prediction on the embedded moving digits (32x32, 1-2 bouncing digits).

python -m train.conv_s5 --config=train/configs/conv_s5_moving_digits.py
python -m train.conv_s5 --config=train/configs/conv_s5_moving_digits.py:convlstm  # baseline

Trains on clips of 20 frames; every eval conditions on 10 test frames and predicts the next
90 (4.5x the training length) in step mode: MSE/PSNR/SSIM per band of the horizon, and a PNG
strip of truth vs prediction in <workdir>/strips/. Moving-MNIST (64x64, MNIST digits; needs
`python -m jaxml.data.prepare --dataset=mnist` once): --config.data.name=bouncing_mnist.
"""

import ml_collections


def conv_s5_model():
    return ml_collections.ConfigDict(
        {
            "name": "conv_s5",
            "d_model": 32,
            "n_layers": 2,
            "downsample": 2,
            "state_size": 128,  # P = 64 complex state channels (conj_sym)
            "blocks": 1,
            "conj_sym": True,
            "kernel_size_B": 3,
            "kernel_size_C": 3,
            "discretization": "zoh",
            "dt_min": 1e-3,
            "dt_max": 1e-1,
            "clip_eigs": False,
            "scan_impl": "auto",
        }
    )


def conv_lstm_model():
    """About as many parameters as conv_s5_model (the paper's baseline: flax ConvLSTMCell)."""
    return ml_collections.ConfigDict(
        {"name": "conv_lstm", "d_model": 32, "n_layers": 2, "downsample": 2, "kernel_size": 3}
    )


def get_config(variant: str = "convs5"):
    if variant not in ("convs5", "convlstm"):
        raise ValueError(f"unknown variant {variant!r}; use :convs5 or :convlstm")
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.name = "moving_digits"
    config.data.data_dir = ml_collections.FieldReference(None, field_type=str)
    config.data.train_frames = 20
    config.data.batch_size = 8
    config.data.eval_batch_size = 64

    config.model = conv_s5_model() if variant == "convs5" else conv_lstm_model()

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.ssm_lr = 2e-3
    config.optimizer.lr_factor = 1.0
    config.optimizer.weight_decay = 0.01
    config.optimizer.warmup_steps = 50
    config.optimizer.clip_grad_norm = 1.0

    config.eval = ml_collections.ConfigDict()
    config.eval.context_frames = 10
    config.eval.horizon = 90
    config.eval.bands = (10, 40, 90)  # report frames 1-10, 11-40, 41-90 of the rollout
    config.eval.num_videos = 64
    config.eval.strip_videos = 4
    config.eval.strip_stride = 5
    config.eval.strip_scale = 2
    config.evals = ("video_prediction", "video_strips")

    config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})
    config.fsdp_min_size = 2**14

    config.total_steps = 600
    config.log_every = 50
    config.eval_every = 300
    config.checkpoint_every = 300
    config.checkpoints_to_keep = 2
    config.checkpoint_keep_period = ml_collections.FieldReference(None, field_type=int)
    config.stop_check_every = 1
    config.nan_policy = "stop"
    return config
