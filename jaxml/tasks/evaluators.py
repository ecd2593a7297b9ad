"""Evaluators named in `config.evals` (as in big_vision), instead of hard-coded in a loop.

An evaluator is a factory `make(config, context) -> evaluate(state) -> dict[str, float]`,
found by name in EVALUATORS ("module:attribute") and imported only when a config names it,
so a task pays for no evaluator it does not use. `context` is a dict of what the task
built (mesh, shardings, network, data sources, ...); each factory takes what it needs.
"""

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from jaxml.training.cli import ConfigError

Evaluate = Callable[[Any], dict]

# name -> "module:factory". Add a line here for a new evaluator.
EVALUATORS: dict[str, str] = {
    "accuracy": "jaxml.tasks.classification:accuracy_evaluator",
    "best_checkpoint": "jaxml.tasks.classification:best_checkpoint_evaluator",
    "samples_grid": "jaxml.diffusion.evaluators:make_samples_grid",
    "fd_digits": "jaxml.diffusion.evaluators:make_fd_digits",
    "fid": "jaxml.diffusion.evaluators:make_fid",
    "video_prediction": "jaxml.tasks.video:make_prediction_evaluator",
    "video_strips": "jaxml.tasks.video:make_strip_evaluator",
}


def check_names(names: Sequence[str]) -> None:
    """Raises ConfigError naming config.evals if any name is unknown (call before training)."""
    unknown = [n for n in names if n not in EVALUATORS]
    if unknown:
        raise ConfigError(
            f"config.evals names unknown evaluator(s) {unknown}; known: {sorted(EVALUATORS)}"
        )


def make(name: str, config, context: dict) -> Evaluate:
    check_names([name])
    module_name, attribute = EVALUATORS[name].split(":")
    return getattr(importlib.import_module(module_name), attribute)(config, context)


def make_eval_fn(names: Sequence[str], config, context: dict) -> Evaluate | None:
    """One function running every named evaluator in order; their metrics merged into one dict
    (a later evaluator may read earlier results from `context["results"]`)."""
    if not names:
        return None
    evaluators = [make(name, config, context) for name in names]

    def evaluate(state) -> dict:
        results: dict = {}
        context["results"] = results
        for evaluator in evaluators:
            results.update(evaluator(state))
        return results

    return evaluate
