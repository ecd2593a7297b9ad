"""The S5 classification task end to end on synthetic records of the paper datasets' format:
evaluation protocol (best-validation test accuracy, max test without validation, the 8 kHz
rescaled test), the best/ checkpoint, the validation hold-out, and config validation."""

import inspect
import json

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import s5_contract_data

import jaxml.tasks
from jaxml import parallel
from jaxml.tasks import classification
from jaxml.tasks.best_checkpoint import restore_best
from jaxml.training.cli import ConfigError
from train.configs import s5_paper, s5_sdigits

TINY_MODEL = dict(n_layers=2, d_model=8, state_size=8, blocks=2)


def tiny(config, steps=4, eval_every=1):
    config.model.update(TINY_MODEL)
    config.total_steps = steps
    config.log_every = 1
    config.eval_every = eval_every
    config.checkpoint_every = steps
    config.optimizer.warmup_epochs = 0.0
    config.data.batch_size = config.data.eval_batch_size = 8
    return config


def paper_like(**kw):
    defaults = dict(
        dataset="fake",
        train_size=16,
        epochs=1,
        batch_size=8,
        num_classes=3,
        seed=0,
        model={},
        optimizer={},
    )
    return s5_paper.paper_config(**{**defaults, **kw})


def rows(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "eval/test_accuracy" in r]


def run(config, workdir):
    mesh = parallel.make_mesh(config.mesh)
    return jaxml.tasks.train(classification.build(config, mesh, workdir), config, workdir)


def test_best_validation_protocol_and_checkpoint(monkeypatch, tmp_path):
    """Retrieval (two towers, tokens): test accuracy reported at the best-validation eval."""
    made = s5_contract_data.use_fake_sources(
        monkeypatch,
        "retrieval",
        {"train": (32, 12), "validation": (16, 12), "test": (16, 12)},
        classes=2,
    )
    config = tiny(paper_like(num_classes=2, tokens=True, model=dict(architecture="retrieval")))
    config.model.vocab_size = 6
    config.optimizer.ssm_lr = 2e-2  # big steps: the validation accuracy moves between evals
    final = run(config, tmp_path)

    evals = rows(tmp_path)
    assert [r["step"] for r in evals] == [1, 2, 3, 4]
    val = [r["eval/val_accuracy"] for r in evals]
    best = int(np.argmax(val))  # the first maximum, as a strict ">" keeps the first
    assert final["best_val"]["step"] == evals[best]["step"]
    assert final["best_val"]["val_accuracy"] == pytest.approx(val[best])
    assert final["best_val"]["test_accuracy"] == pytest.approx(evals[best]["eval/test_accuracy"])
    assert final["last"]["step"] == 4
    assert final["last"]["test_accuracy"] == pytest.approx(evals[-1]["eval/test_accuracy"])
    assert json.loads((tmp_path / "final_metrics.json").read_text()) == final

    # best/ holds that step's parameters: they give the recorded validation accuracy again.
    manager = ocp.CheckpointManager(tmp_path / "best", item_names=("state", "metrics"))
    assert manager.all_steps() == [final["best_val"]["step"]]
    record, variables = restore_best(tmp_path)
    assert record["val_accuracy"] == pytest.approx(final["best_val"]["val_accuracy"])
    val = {k: np.stack([r[k] for r in made["validation"]]) for k in ("inputs", "lengths", "label")}
    logp = classification.make_model(config).apply(variables, val["inputs"], val["lengths"])
    accuracy = float(np.mean(np.argmax(logp, -1) == val["label"]))
    assert accuracy == pytest.approx(final["best_val"]["val_accuracy"])


@pytest.mark.slow
def test_max_test_without_validation_and_rescaled_8khz_test(monkeypatch, tmp_path):
    """No validation split (IMDB): max test accuracy, labelled; a split with eval_step_rescale
    (Speech Commands at 8 kHz) is evaluated with Δ scaled, checked against a direct evaluation."""
    made = s5_contract_data.use_fake_sources(
        monkeypatch,
        "continuous",
        {"train": (16, 16), "test": (8, 16), "test_8khz": (8, 8)},
        classes=3,
    )
    config = paper_like(
        validation=False,
        test_splits=("test", "test_8khz"),
        eval_step_rescale={"test_8khz": 2.0},
        model=dict(bidirectional=False),
    )
    config = tiny(config, steps=3)
    final = run(config, tmp_path)
    evals = rows(tmp_path)
    tests = [r["eval/test_accuracy"] for r in evals]
    assert "best_val" not in final and "no validation split" in final["max_test"]["note"]
    assert final["max_test"]["test_accuracy"] == pytest.approx(max(tests))
    assert final["max_test"]["step"] == evals[int(np.argmax(tests))]["step"]

    # The last state's 8 kHz loss, recomputed here with a model whose Δ is doubled.
    manager = ocp.CheckpointManager(tmp_path / "checkpoints", item_names=("state",))
    state = manager.restore(3, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    variables = {"params": state["params"], **state["model_state"]}
    batch = {k: np.stack([r[k] for r in made["test_8khz"]]) for k in ("inputs", "label")}

    def loss_at(step_rescale):
        model = classification.make_model(config, step_rescale=step_rescale)
        logp = model.apply(variables, jnp.asarray(batch["inputs"]))
        return float(-jnp.mean(jnp.take_along_axis(logp, batch["label"][:, None], 1)))

    assert final["last"]["test_8khz_loss"] == pytest.approx(loss_at(2.0), rel=1e-4)
    assert abs(loss_at(2.0) - loss_at(1.0)) > 1e-4  # the rescale matters here


# First entries of the psdigits permutation (RandomState(PERMUTATION_SEED).permutation(1024)).
PERMUTATION_HEAD = [201, 389, 485, 677, 241, 688]


def test_validation_holdout_and_fixed_permutation():
    source = list(range(1437))
    train, val = classification.holdout_split(source, 0.1)
    got_train, got_val = {train[i] for i in range(len(train))}, {val[i] for i in range(len(val))}
    assert len(got_val) == 144 and len(got_train) == 1293 and not got_train & got_val
    again = classification.holdout_split(source, 0.1)[1]
    assert [again[i] for i in range(len(again))] == [val[i] for i in range(len(val))]
    perm = classification.fixed_permutation(1024)
    assert sorted(perm.tolist()) == list(range(1024))
    # Pinned: the permuted task must never change under anyone's feet.
    assert perm[:6].tolist() == PERMUTATION_HEAD


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("model.activation", "relu", "config.model.activation='relu'"),
        ("model.blocks", 3, "config.model.blocks=3 must divide"),
        ("model.scan_impl", "magic", "config.model.scan_impl"),
        ("model.input_encoding", "one_hot", "config.model.vocab_size"),
        ("optimizer.opt_config", "fast", "config.optimizer.opt_config"),
        ("optimizer.schedule", "linear", "config.optimizer.schedule"),
        ("data.validation_split", "validation", "not both"),
        ("data.test_splits", (), "config.data.test_splits"),
        ("data.preprocess", "nope", "config.data.preprocess"),
        ("evals", ("best_checkpoint", "accuracy"), "listed before"),
        ("evals", ("accuracy", "bogus"), "unknown evaluator"),
    ],
)
def test_bad_config_values_are_one_config_error(key, value, message):
    config = s5_sdigits.get_config()
    section, _, field = key.rpartition(".")
    (config[section] if section else config)[field] = value
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        classification.validate(config)


def test_mock_needs_a_data_source_with_mock_data():
    from jaxml.data import sources

    config = s5_sdigits.get_config()
    config.data.mock = True
    if "mock" in inspect.signature(sources.data_source).parameters:
        classification.validate(config)
    else:
        with pytest.raises(ConfigError, match="mock"):
            classification.validate(config)
