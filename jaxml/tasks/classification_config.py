"""Checks of an S5 classification config, all before any work: one ConfigError naming the key.

Also resolves the sizes a config may leave to the dataset (vocab_size, num_classes: None
means "from jaxml.data.sequence_tasks.TASK_SPECS").
"""

from __future__ import annotations

import dataclasses

from jaxml.data import preprocess as preprocessing
from jaxml.models import s5 as s5_models
from jaxml.ssm import init as ssm_init
from jaxml.ssm.discretize import DISCRETIZATIONS
from jaxml.ssm.optimizer import OPT_CONFIGS, SCHEDULES
from jaxml.ssm.recurrence import available_impls
from jaxml.tasks import evaluators
from jaxml.training import cli
from jaxml.training.cli import ConfigError

ARCHITECTURES = ("classifier", "retrieval")
# "sequence_task": records already in the model's format; the rest: jaxml.data.preprocess.
PREPROCESSES = (
    "sequence_task",
    *(n for n in preprocessing.PREPROCESSORS if n != "image_generation"),
)
MODEL_KEYS = frozenset(
    f.name
    for f in dataclasses.fields(s5_models.S5Classifier)
    if f.name not in ("parent", "name", "num_classes")
) | {"architecture"}


def _task_spec(config) -> dict | None:
    try:
        from jaxml.data.sequence_tasks import TASK_SPECS
    except ImportError:
        return None
    return TASK_SPECS.get(config.data.name)


def _from_spec(config, key: str, field: str, spec_key: str):
    value = config[key.split(".")[0]].get(field)
    if value is not None:
        return value
    spec = _task_spec(config)
    if spec is None:
        raise ConfigError(
            f"config.{key} is None (= from the dataset), but {config.data.name!r} has no entry "
            "in jaxml.data.sequence_tasks.TASK_SPECS; set it"
        )
    return spec[spec_key]


def vocab_size(config) -> int | None:
    if config.model.get("input_encoding", "dense") == "dense":
        return config.model.get("vocab_size")
    return _from_spec(config, "model.vocab_size", "vocab_size", "vocab_size")


def num_classes(config) -> int:
    return _from_spec(config, "data.num_classes", "num_classes", "num_classes")


def _choice(key, value, choices):
    if value not in choices:
        raise ConfigError(f"config.{key}={value!r} must be one of {tuple(choices)}")


def _positive(key, value, kind=int):
    if not isinstance(value, kind) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"config.{key} must be a positive {kind.__name__}, got {value!r}")


def validate_model(config):
    m = config.model
    unknown = sorted(set(m.keys()) - MODEL_KEYS)
    if unknown:
        raise ConfigError(f"config.model has unknown key(s) {unknown}; known: {sorted(MODEL_KEYS)}")
    _choice("model.architecture", m.get("architecture", "classifier"), ARCHITECTURES)
    _choice("model.activation", m.get("activation", "half_glu1"), s5_models.ACTIVATIONS)
    _choice("model.norm", m.get("norm", "batch"), s5_models.NORMS)
    _choice("model.pooling", m.get("pooling", "mean"), s5_models.POOLINGS)
    _choice("model.input_encoding", m.get("input_encoding", "dense"), s5_models.INPUT_ENCODINGS)
    _choice("model.C_init", m.get("C_init", "trunc_standard_normal"), ssm_init.C_INITS)
    _choice("model.discretization", m.get("discretization", "zoh"), DISCRETIZATIONS)
    _choice("model.scan_impl", m.get("scan_impl", "auto"), available_impls())
    for key in ("d_model", "n_layers", "state_size", "blocks"):
        if key in m:
            _positive(f"model.{key}", m[key])
    state_size, blocks = m.get("state_size", 256), m.get("blocks", 8)
    if state_size % blocks:
        raise ConfigError(
            f"config.model.blocks={blocks} must divide config.model.state_size={state_size}"
        )
    if m.get("conj_sym", True) and (state_size // blocks) % 2:
        raise ConfigError(
            f"config.model.conj_sym needs an even block size (state_size/blocks = "
            f"{state_size}/{blocks} = {state_size // blocks})"
        )
    dt_min, dt_max = m.get("dt_min", 1e-3), m.get("dt_max", 1e-1)
    if not 0 < dt_min <= dt_max:
        raise ConfigError(f"config.model needs 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
    if not 0.0 <= m.get("dropout", 0.0) < 1.0:
        raise ConfigError(f"config.model.dropout must be in [0, 1), got {m.dropout}")
    if not 0.0 <= m.get("bn_momentum", 0.95) < 1.0:
        raise ConfigError(f"config.model.bn_momentum must be in [0, 1), got {m.bn_momentum}")
    if m.get("step_rescale", 1.0) <= 0:
        raise ConfigError(f"config.model.step_rescale must be positive, got {m.step_rescale}")
    if m.get("input_encoding", "dense") != "dense":
        _positive("model.vocab_size", vocab_size(config))


def validate_data(config):
    d = config.data
    _choice("data.preprocess", d.preprocess, PREPROCESSES)
    _positive("data.num_classes", num_classes(config))
    fraction = d.get("validation_fraction", 0.0) or 0.0
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"config.data.validation_fraction must be in [0, 1), got {fraction}")
    if fraction and d.get("validation_split"):
        raise ConfigError(
            "set one of config.data.validation_split (a prepared split) and "
            "config.data.validation_fraction (held out from train), not both"
        )
    tests = tuple(d.test_splits)
    if not tests:
        raise ConfigError("config.data.test_splits must name at least one split")
    rescale = dict(d.get("eval_step_rescale") or {})
    for split, factor in rescale.items():
        if split not in tests and split != "validation":
            raise ConfigError(
                f"config.data.eval_step_rescale names {split!r}, not one of the evaluated "
                f"splits {('validation',) + tests}"
            )
        if not factor > 0:
            raise ConfigError(f"config.data.eval_step_rescale.{split} must be positive")
    if d.get("mock", False):
        import inspect

        from jaxml.data import sources

        if "mock" not in inspect.signature(sources.data_source).parameters:
            raise ConfigError(
                "config.data.mock=True, but this jaxml's data_source has no mock data"
            )
    limit = d.get("max_eval_examples")
    if limit is not None:
        _positive("data.max_eval_examples", limit)


def validate_optimizer(config):
    o = config.optimizer
    _choice("optimizer.opt_config", o.get("opt_config", "standard"), OPT_CONFIGS)
    _choice("optimizer.schedule", o.get("schedule", "cosine"), SCHEDULES)
    for key in ("ssm_lr", "lr_factor"):
        if not o[key] > 0:
            raise ConfigError(f"config.optimizer.{key} must be positive, got {o[key]}")
    for key in ("weight_decay", "warmup_epochs", "lr_min"):
        if o.get(key, 0.0) < 0:
            raise ConfigError(f"config.optimizer.{key} must be >= 0, got {o[key]}")


def validate(config):
    """Every model / data / optimizer / loop / evals field of an S5 classification config."""
    cli.check_loop_config(
        config,
        {
            "data.batch_size": config.data.batch_size,
            "data.eval_batch_size": config.data.eval_batch_size,
        },
    )
    validate_model(config)
    validate_data(config)
    validate_optimizer(config)
    evaluators.check_names(list(config.evals))
    if "best_checkpoint" in config.evals:
        names = list(config.evals)
        if "accuracy" not in names or names.index("accuracy") > names.index("best_checkpoint"):
            raise ConfigError("config.evals: 'best_checkpoint' needs 'accuracy' listed before it")


def check_schedule(config, warmup_steps: int):
    """The warmup (in steps, known once the train split is open) must fit the run."""
    factor = 2 if config.optimizer.get("schedule", "cosine") == "official_cosine" else 1
    if factor * warmup_steps >= config.total_steps:
        raise ConfigError(
            f"warmup ({config.optimizer.warmup_epochs} epochs = {warmup_steps} steps) must be "
            f"shorter than config.total_steps={config.total_steps}"
            + (" / 2 (official_cosine ends its cosine at T - W)" if factor == 2 else "")
            + "; lower config.optimizer.warmup_epochs"
        )
