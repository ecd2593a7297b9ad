"""S5 sequence classification: `build(config, mesh) -> Task` for MNIST-1D, the sequential
digits and the S5 paper's tasks (sMNIST ... Path-X, Speech Commands), with the paper's
evaluation protocol.

Splits: `train`; a validation split, either a prepared one (`data.validation_split`, e.g.
"validation") or `data.validation_fraction` of train held out by a fixed permutation; and
`data.test_splits` (e.g. ("test", "test_8khz")). The "accuracy" evaluator reports
`<split>_accuracy` / `<split>_loss` for each (validation as `val_*`), a split listed in
`data.eval_step_rescale` evaluated with Δ scaled by that factor (Speech Commands at 8 kHz:
2.0, no retraining). The "best_checkpoint" evaluator keeps the state of the best validation
accuracy in `<workdir>/best/` (orbax, atomic) and its test numbers; with no validation split
(IMDB) it tracks the maximum test accuracy instead, as the paper reported, labelled
"max_test". final_metrics.json: {"last": {...}, "best_val" | "max_test": {...}}.

Batches (the S5 data contract): `inputs` float32 (b, L, C) or int32 tokens (b, L) ((b, 2, L)
for the retrieval task), optional `lengths` int32 (b,) ((b, 2)), `label` int32 (b,).
"""

from __future__ import annotations

import logging
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxml import data, parallel, training
from jaxml.data import preprocess as preprocessing
from jaxml.models.s5 import S5Classifier, S5RetrievalClassifier
from jaxml.ssm.optimizer import s5_optimizer
from jaxml.tasks import Task, evaluators
from jaxml.tasks import classification_config as checks
from jaxml.tasks.classification_config import validate

log = logging.getLogger(__name__)

# Hold-out permutation of `validation_fraction` and the permuted-pixel tasks' permutation:
# fixed seeds of NumPy's legacy RandomState, whose streams are frozen across versions.
VALIDATION_SEED = 0
PERMUTATION_SEED = 92916


def fixed_permutation(length: int) -> np.ndarray:
    """The one pixel permutation of the permuted tasks (psdigits) for sequences of `length`."""
    return np.random.RandomState(PERMUTATION_SEED).permutation(length)


class Subset:
    """Records `indices` of a random-access source (len, __getitem__)."""

    def __init__(self, source, indices):
        self._source, self._indices = source, np.asarray(indices)

    def __len__(self):
        return len(self._indices)

    def __getitem__(self, index):
        return self._source[int(self._indices[index])]


def holdout_split(source, fraction: float) -> tuple[Subset, Subset]:
    """(train, validation): a fixed random `fraction` of `source` held out for validation."""
    order = np.random.RandomState(VALIDATION_SEED).permutation(len(source))
    n_val = max(1, round(fraction * len(source)))
    return Subset(source, np.sort(order[n_val:])), Subset(source, np.sort(order[:n_val]))


def sequence_task(batch, image_size=None):
    """Records of the S5 data contract -> the model's dtypes (int tokens stay int)."""
    del image_size
    out = {"inputs": np.asarray(batch["inputs"]), "label": np.asarray(batch["label"], np.int32)}
    if np.issubdtype(out["inputs"].dtype, np.integer):
        out["inputs"] = out["inputs"].astype(np.int32)
    else:
        out["inputs"] = out["inputs"].astype(np.float32)
    if "lengths" in batch:
        out["lengths"] = np.asarray(batch["lengths"], np.int32)
    return out


def make_preprocess(config):
    name = config.data.preprocess
    fn = sequence_task if name == "sequence_task" else preprocessing.get(name)
    image_size = config.data.get("image_size")
    if name != "sequence_task" and image_size is not None:
        fn = preprocessing.get(name, image_size)
    if not config.data.get("permute", False):
        return fn

    def permuted(batch):
        out = fn(batch)
        perm = fixed_permutation(out["inputs"].shape[1])
        return {**out, "inputs": out["inputs"][:, perm]}

    return permuted


def _data_source(config, split: str):
    if config.data.get("mock", False):
        return data.data_source(config.data.name, split, config.data.data_dir, mock=True)
    return data.data_source(config.data.name, split, config.data.data_dir)


def make_sources(config) -> tuple[object, dict]:
    """(train source, {split name: source} for evaluation: validation first, then tests)."""
    train = _data_source(config, "train")
    evals = {}
    if config.data.get("validation_fraction", 0.0):
        train, evals["validation"] = holdout_split(train, config.data.validation_fraction)
    elif config.data.get("validation_split"):
        evals["validation"] = _data_source(config, config.data.validation_split)
    for split in config.data.test_splits:
        evals[split] = _data_source(config, split)
    limit = config.data.get("max_eval_examples")
    if limit:
        evals = {k: Subset(s, np.arange(min(limit, len(s)))) for k, s in evals.items()}
    return train, evals


def metric_prefix(split: str) -> str:
    return "val" if split == "validation" else split


def make_model(config, step_rescale: float = 1.0):
    options = {k: v for k, v in config.model.items() if k != "architecture"}
    options["step_rescale"] = options.get("step_rescale", 1.0) * step_rescale
    options["vocab_size"] = checks.vocab_size(config)
    num_classes = checks.num_classes(config)
    if config.model.get("architecture", "classifier") == "retrieval":
        options.pop("pooling", None)
        return S5RetrievalClassifier(num_classes=num_classes, **options)
    return S5Classifier(num_classes=num_classes, **options)


def _nll(logp, label):
    return -jnp.take_along_axis(logp, label[:, None], axis=-1)[:, 0]


def make_loss_fn(model):
    def loss_fn(params, model_state, batch, rng):
        logp, updates = model.apply(
            {"params": params, **model_state},
            batch["inputs"],
            batch.get("lengths"),
            train=True,
            rngs={"dropout": rng},
            mutable=list(model_state),
        )
        accuracy = jnp.mean(jnp.argmax(logp, -1) == batch["label"])
        return jnp.mean(_nll(logp, batch["label"])), (dict(updates), {"accuracy": accuracy})

    return loss_fn


def make_metric_fn(model):
    def metric_fn(params, model_state, batch):
        logp = model.apply(
            {"params": params, **model_state}, batch["inputs"], batch.get("lengths"), train=False
        )
        correct = (jnp.argmax(logp, -1) == batch["label"]).astype(jnp.float32)
        mask = batch["mask"]
        return {
            "loss": training.masked_sum(_nll(logp, batch["label"]), mask),
            "accuracy": training.masked_sum(correct, mask),
            "count": jnp.sum(mask.astype(jnp.float32)),
        }

    return metric_fn


def accuracy_evaluator(config, context):
    """Evaluator "accuracy": loss and accuracy on every evaluation split."""
    rescale = dict(config.data.get("eval_step_rescale") or {})
    to_global = lambda b: parallel.global_batch(b, context["batch_sharding"])
    steps = {}
    for split in context["eval_sources"]:
        model = make_model(config, step_rescale=rescale.get(split, 1.0))
        steps[split] = training.make_eval_step(
            make_metric_fn(model),
            state_shardings=context["state_shardings"],
            batch_sharding=context["batch_sharding"],
        )

    def evaluate(state):
        results = {}
        for split, source in context["eval_sources"].items():
            batches = data.eval_batches(
                source,
                global_batch_size=config.data.eval_batch_size,
                preprocess=context["preprocess"],
            )
            metrics = training.evaluate(steps[split], state, batches, to_global)
            prefix = metric_prefix(split)
            results[f"{prefix}_accuracy"] = metrics["accuracy"]
            results[f"{prefix}_loss"] = metrics["loss"]
        return results

    return evaluate


def _has_validation(config) -> bool:
    return bool(config.data.get("validation_fraction") or config.data.get("validation_split"))


def best_checkpoint_evaluator(config, context):
    """Evaluator "best_checkpoint" (after "accuracy"): keeps the best-validation state in
    <workdir>/best/ (max test accuracy when there is no validation split)."""
    from jaxml.tasks.best_checkpoint import BestCheckpoint

    has_val = _has_validation(config)
    keeper = BestCheckpoint(
        context.get("workdir"),
        metric="val_accuracy" if has_val else "test_accuracy",
        label="best_val" if has_val else "max_test",
    )
    return keeper.evaluate(context)


def make_report(config):
    """final_metrics.json: the last eval, and the best-validation (or max-test) record."""
    label = "best_val" if _has_validation(config) else "max_test"

    def report(final: dict) -> dict:
        out = {"last": {k: v for k, v in final.items() if not k.startswith("best/")}}
        best = {k.removeprefix("best/"): v for k, v in final.items() if k.startswith("best/")}
        if best:
            if label == "max_test":
                best["note"] = (
                    "no validation split: the maximum test accuracy over evaluations, as the "
                    "paper reported it"
                )
            out[label] = best
        return out

    return report


def build(config, mesh, workdir=None) -> Task:
    """The S5 classification task from its config; `workdir` receives best/ checkpoints."""
    validate(config)
    batch_sharding = parallel.batch_sharding(mesh)
    log.info("mesh %s over %d processes", dict(mesh.shape), jax.process_count())

    preprocess = make_preprocess(config)
    train_source, eval_sources = make_sources(config)
    steps_per_epoch = max(1, len(train_source) // config.data.batch_size)
    warmup_steps = int(config.optimizer.warmup_epochs * steps_per_epoch)
    checks.check_schedule(config, warmup_steps)
    train_iterator = data.train_iterator(
        train_source,
        global_batch_size=config.data.batch_size,
        seed=config.seed,
        preprocess=preprocess,
    )

    model = make_model(config)
    opt = config.optimizer
    tx = s5_optimizer(
        total_steps=config.total_steps,
        warmup_steps=warmup_steps,
        ssm_lr=opt.ssm_lr,
        lr_factor=opt.lr_factor,
        weight_decay=opt.weight_decay,
        opt_config=opt.get("opt_config", "standard"),
        dt_global=opt.get("dt_global", False),
        schedule=opt.get("schedule", "cosine"),
        lr_min=opt.get("lr_min", 0.0),
    )
    first = next(
        data.eval_batches(train_source, global_batch_size=2, process_index=0, process_count=1)
    )
    example = preprocess({k: v for k, v in first.items() if k != "mask"})

    def init_fn(rng):
        return model.init(
            {"params": rng, "dropout": rng},
            jnp.asarray(example["inputs"]),
            None if "lengths" not in example else jnp.asarray(example["lengths"]),
            train=False,
        )

    state, state_shardings = training.create_train_state(
        init_fn, tx, jax.random.PRNGKey(config.seed), mesh, fsdp_min_size=config.fsdp_min_size
    )
    train_step = training.make_train_step(
        make_loss_fn(model), tx, state_shardings=state_shardings, batch_sharding=batch_sharding
    )
    context = dict(
        mesh=mesh,
        model=model,
        state_shardings=state_shardings,
        batch_sharding=batch_sharding,
        eval_sources=eval_sources,
        preprocess=preprocess,
        workdir=workdir,
    )
    eval_fn = evaluators.make_eval_fn(list(config.evals), config, context)
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    splits = ", ".join(f"{k} {len(v)}" for k, v in {"train": train_source, **eval_sources}.items())
    return Task(
        state=state,
        state_shardings=state_shardings,
        train_step=train_step,
        train_iterator=train_iterator,
        batch_sharding=batch_sharding,
        eval_fn=eval_fn,
        summary=(
            f"S5 classifier with {n_params} parameters; {steps_per_epoch} steps/epoch, "
            f"{math.ceil(config.total_steps / steps_per_epoch)} epochs; examples: {splits}"
        ),
        report=make_report(config),
    )
