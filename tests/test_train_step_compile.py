"""The compiled train step: no per-leaf state copies, and convolutions left to Eigen on CPU."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxml import parallel, training
from jaxml.training import xla_cpu_options


def _conv_step(compiler_options_fn=None, channels=64, size=32):
    mesh = parallel.make_mesh({"data": 1}, devices=jax.devices()[:1])
    tx = optax.adam(1e-3)

    def loss_fn(params, model_state, batch, rng):
        y = jax.lax.conv_general_dilated(
            batch["x"], params["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        y = y @ params["dense"] + sum(params[f"b{i}"] for i in range(8))
        return jnp.mean(y**2), (model_state, {})

    init_fn = lambda rng: {
        "params": {
            "w": jnp.ones((3, 3, channels, channels)) * 0.01,
            "dense": jnp.eye(channels),
            **{f"b{i}": jnp.zeros((channels,)) for i in range(8)},  # more leaves to copy
        }
    }
    state, shardings = training.create_train_state(
        init_fn, tx, jax.random.PRNGKey(0), mesh, use_ema=True
    )
    step = training.make_train_step(
        loss_fn,
        tx,
        state_shardings=shardings,
        batch_sharding=parallel.batch_sharding(mesh),
        ema_decay=0.9,
    )
    batch = {"x": np.ones((8, size, size, channels), np.float32)}
    return step.lower(state, batch).compile().as_text()


def _entry(hlo: str) -> str:
    return hlo[hlo.index("ENTRY") :]


def test_train_step_does_not_copy_the_state():
    """The non-finite guard is one conditional: no copy of each donated state leaf (a
    jnp.where per leaf made XLA copy all of them: params, both Adam moments, EMA)."""
    copies = re.findall(r"\bcopy\(", _entry(_conv_step(channels=8, size=8)))
    assert len(copies) <= 2, copies


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU options")
def test_convolutions_leave_ynnpack_dots_stay(monkeypatch):
    """At this size XLA:CPU's defaults put the convolution (and its weight gradient) in a
    YNNPACK fusion; with the train-step options no convolution is in one, dots still are."""

    tuned = _conv_step()
    assert "__ynn_fusion" in tuned  # dots (and reductions) keep YNNPACK
    ynn_convs = re.findall(r"calls=(%[\w.]+).*__ynn_fusion", tuned)
    bodies = {
        m.group(1): m.group(2) for m in re.finditer(r"\n(%[\w.]+) .*?\{\n(.*?)\n\}", tuned, re.S)
    }
    assert not any("convolution(" in bodies.get(c, "") for c in ynn_convs)
    assert "convolution(" in tuned

    monkeypatch.setattr(xla_cpu_options, "CPU_TRAIN_STEP_OPTIONS", {})
    xla_cpu_options._accepted.cache_clear()
    default = _conv_step()
    ynn_convs = re.findall(r"calls=(%[\w.]+).*__ynn_fusion", default)
    bodies = {
        m.group(1): m.group(2) for m in re.finditer(r"\n(%[\w.]+) .*?\{\n(.*?)\n\}", default, re.S)
    }
    assert any("convolution(" in bodies.get(c, "") for c in ynn_convs)
    xla_cpu_options._accepted.cache_clear()
