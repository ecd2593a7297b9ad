"""The S5 paper's task recipes (lindermanlab/S5 bin/run_experiments/*.sh), shared by the
train/configs/s5_<task>.py files; each of those names its prepare and run commands.

Every recipe: prenorm BatchNorm, bidirectional, mean pooling, 1 warmup epoch (IMDB: none) and
the official cosine (end T - W), test accuracy at the best validation accuracy (IMDB: max
test, it has no validation split). Steps are the official epochs times the official train
split size // batch; evaluation and checkpoints once per epoch. `--config.data.mock=True`
runs any recipe on generated records of the task's exact format (no files needed).
"""

import ml_collections

from jaxml.data.sequence_tasks import TASK_SPECS
from train.configs import s5_mnist1d


def paper_config(
    *,
    dataset: str,
    train_size: int,
    epochs: int,
    batch_size: int,
    num_classes: int,
    model: dict,
    optimizer: dict,
    seed: int,
    tokens: bool = False,
    validation: bool = True,
    test_splits: tuple = ("test",),
    eval_step_rescale: dict | None = None,
) -> ml_collections.ConfigDict:
    """A train.s5 config for one paper task (hyperparameters as the official script)."""
    config = s5_mnist1d.get_config()
    config.seed = seed
    config.data.name = dataset
    # The dataset's own transform (jaxml/data/sequence_tasks.py) to the model's inputs.
    # (A dataset outside TASK_SPECS must already store records in the model's format.)
    config.data.preprocess = TASK_SPECS.get(dataset, {}).get("preprocess", "sequence_task")
    config.data.num_classes = num_classes
    config.data.validation_fraction = 0.0
    config.data.validation_split = "validation" if validation else None
    config.data.test_splits = tuple(test_splits)
    config.data.eval_step_rescale = ml_collections.ConfigDict(eval_step_rescale or {})
    config.data.batch_size = batch_size
    config.data.eval_batch_size = batch_size

    config.model = ml_collections.ConfigDict(
        dict(
            architecture="classifier",
            input_encoding="one_hot" if tokens else "dense",
            # None: the vocabulary of the prepared dataset (jaxml.data.sequence_tasks).
            vocab_size=ml_collections.FieldReference(None, field_type=int),
            n_layers=6,
            d_model=128,
            state_size=256,
            blocks=8,
            C_init="trunc_standard_normal",
            discretization="zoh",
            activation="half_glu1",
            conj_sym=True,
            clip_eigs=False,
            bidirectional=True,
            dt_min=1e-3,
            dt_max=1e-1,
            prenorm=True,
            norm="batch",
            bn_momentum=0.95,
            dropout=0.0,
            pooling="mean",
            scan_impl="auto",
        )
    )
    config.model.update(model)

    config.optimizer.ssm_lr = 1e-3
    config.optimizer.lr_factor = 1.0
    config.optimizer.weight_decay = 0.05
    config.optimizer.warmup_epochs = 1.0
    config.optimizer.opt_config = "standard"
    config.optimizer.dt_global = False
    config.optimizer.schedule = "official_cosine"
    config.optimizer.lr_min = 0.0
    config.optimizer.update(optimizer)

    config.evals = ("accuracy", "best_checkpoint")
    steps_per_epoch = train_size // batch_size
    config.total_steps = epochs * steps_per_epoch
    config.log_every = 100
    config.eval_every = steps_per_epoch
    config.checkpoint_every = steps_per_epoch
    return config
