"""The ten S5 paper recipes: hyperparameters as the official scripts, and each one trains 2
steps + 1 evaluation on mock records of its dataset's exact format (needs the `mock` flag of
jaxml.data.sources.data_source; skipped where this build has none)."""

import importlib
import inspect

import jax
import numpy as np
import pytest

import jaxml.tasks
from jaxml import parallel
from jaxml.data import sources
from jaxml.tasks import classification

HAS_MOCK = "mock" in inspect.signature(sources.data_source).parameters
CONFIGS = (
    "s5_smnist",
    "s5_psmnist",
    "s5_scifar",
    "s5_listops",
    "s5_imdb",
    "s5_aan",
    "s5_lra_cifar",
    "s5_pathfinder32",
    "s5_pathx",
    "s5_speech35",
)
# Long sequences or wide models: over ~20 s each on a 2-core CPU (estimated, see the note).
# One pixel and one token recipe stay in the default suite; the rest (1-5 min each on 2 cores,
# the full-size official models compile slowly) run with the slow tests.
SLOW = {
    "s5_pathx", "s5_speech35", "s5_aan", "s5_imdb", "s5_lra_cifar", "s5_scifar", "s5_psmnist",
    "s5_pathfinder32",
}  # fmt: skip

# From lindermanlab/S5 bin/run_experiments/*.sh, written out by hand: layers, H, P (ssm_size_base),
# J, batch, epochs, lr_factor, ssm_lr_base, weight_decay, opt_config, dt_global, dropout, seed.
OFFICIAL = {
    "s5_listops": (8, 128, 16, 8, 50, 40, 3, 1e-3, 0.04, "BfastandCdecay", False, 0.0, 6554595),
    "s5_imdb": (6, 256, 192, 12, 50, 35, 4, 1e-3, 0.07, "standard", True, 0.1, 8825365),
    "s5_aan": (6, 128, 256, 16, 32, 20, 2, 1e-3, 0.05, "standard", True, 0.0, 5464368),
    "s5_lra_cifar": (6, 512, 384, 3, 50, 250, 4.5, 1e-3, 0.07, "BfastandCdecay", False, 0.1, 16416),
    "s5_pathfinder32": (6, 192, 256, 8, 64, 200, 5, 9e-4, 0.03, "standard", False, 0.05, 8180844),
    "s5_pathx": (6, 128, 256, 16, 32, 75, 3, 6e-4, 0.06, "BandCdecay", False, 0.0, 6429262),
    "s5_speech35": (6, 96, 128, 16, 16, 40, 4, 2e-3, 0.04, "noBCdecay", False, 0.1, 4062966),
}
# Official train-split sizes (the steps per epoch come from them).
TRAIN_SIZE = {
    "s5_listops": 96_000,
    "s5_imdb": 25_000,
    "s5_aan": 147_086,
    "s5_lra_cifar": 45_000,
    "s5_pathfinder32": 160_000,
    "s5_pathx": 160_000,
    "s5_speech35": 84_843,
}


def load(name):
    return importlib.import_module(f"train.configs.{name}").get_config()


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_recipe_is_the_official_one(name):
    c = load(name)
    layers, H, P, J, batch, epochs, lr_factor, ssm_lr, wd, opt, dt_global, drop, seed = OFFICIAL[
        name
    ]
    m, o = c.model, c.optimizer
    assert (m.n_layers, m.d_model, m.state_size, m.blocks) == (layers, H, P, J)
    assert (c.data.batch_size, o.lr_factor, o.ssm_lr, o.weight_decay) == (
        batch,
        lr_factor,
        ssm_lr,
        wd,
    )
    assert (o.opt_config, o.dt_global, m.dropout, c.seed) == (opt, dt_global, drop, seed)
    assert c.total_steps == epochs * (TRAIN_SIZE[name] // batch)
    assert m.bidirectional and m.prenorm and m.norm == "batch" and m.conj_sym
    assert o.schedule == "official_cosine"
    assert o.warmup_epochs == (0.0 if name == "s5_imdb" else 1.0)
    assert (c.data.validation_split is None) == (name == "s5_imdb")
    if name == "s5_speech35":
        assert dict(c.data.eval_step_rescale) == {"test_8khz": 2.0}


@pytest.mark.skipif(not HAS_MOCK, reason="jaxml.data.sources.data_source has no mock data yet")
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in CONFIGS]
)
def test_recipe_trains_two_steps_and_evaluates_on_mock_data(name, tmp_path):
    config = load(name)
    config.data.mock = True
    # Shrink only steps, batch and evaluation size.
    config.total_steps = 2
    config.log_every = config.eval_every = config.checkpoint_every = 2
    config.optimizer.warmup_epochs = 0.0
    config.data.batch_size = config.data.eval_batch_size = jax.device_count()
    config.data.max_eval_examples = jax.device_count()
    mesh = parallel.make_mesh(config.mesh)
    final = jaxml.tasks.train(classification.build(config, mesh, tmp_path), config, tmp_path)

    last = final["last"]
    assert last["step"] == 2
    splits = ["test"] + (["val"] if config.data.validation_split else [])
    splits += ["test_8khz"] if name == "s5_speech35" else []
    for split in splits:
        assert 0.0 <= last[f"{split}_accuracy"] <= 1.0 and np.isfinite(last[f"{split}_loss"])
    assert ("max_test" if name == "s5_imdb" else "best_val") in final
    assert (tmp_path / "best").is_dir()
