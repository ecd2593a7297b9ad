"""benchmarks/diffusion_digits.py: the weight quantiser and the official Restart settings."""

from pathlib import Path

import benchmark_scripts
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxml.diffusion import samplers


@pytest.fixture(scope="module")
def bench():
    return benchmark_scripts.load("diffusion_digits")


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantize_weights_matches_a_numpy_grid(bench, bits):
    rng = np.random.default_rng(bits)
    params = {
        "conv": {"kernel": rng.normal(size=(3, 3, 4, 8)).astype(np.float32)},
        "dense": {"kernel": rng.normal(size=(16, 5)).astype(np.float32) * 3},
        "norm": {"scale": rng.normal(size=(8,)).astype(np.float32)},
        "zeros": {"kernel": np.zeros((2, 2), np.float32)},
    }
    out = jax.device_get(bench.quantize_weights(jax.tree.map(jnp.asarray, params), bits))
    levels = 2 ** (bits - 1) - 1
    for name in ("conv", "dense"):
        w = params[name]["kernel"].astype(np.float64)
        step = np.abs(w).max() / levels
        expected = np.round(w / step) * step  # independent float64 reference
        np.testing.assert_allclose(out[name]["kernel"], expected, atol=1e-5 * np.abs(w).max())
        assert len(np.unique(np.round(out[name]["kernel"] / step))) <= 2 * levels + 1
        assert np.abs(out[name]["kernel"] - w).max() <= step / 2 + 1e-5
    np.testing.assert_array_equal(out["norm"]["scale"], params["norm"]["scale"])  # 1-D kept
    np.testing.assert_array_equal(out["zeros"]["kernel"], 0.0)  # no 0/0


def published_nfe(num_steps, intervals):
    """NFE = 2 N_main - 1 + sum_i K_i * 2 (N_R,i - 1) (Xu et al. 2023)."""
    return 2 * num_steps - 1 + sum(k * 2 * (n - 1) for n, k, _, _ in intervals)


@pytest.mark.parametrize(
    "label, nfe",
    [
        ("restart official cifar10 (NFE 43)", 43),
        ("restart official imagenet (NFE 203)", 203),
        ("restart N=18 K=10", 75),
        ("heun N=22", 43),
        ("stochastic N=38", 75),
    ],
)
def test_settings_have_the_published_nfe(bench, label, nfe):
    (setting,) = [s for s in bench.SETTINGS if s[0] == label]
    _, sampler, overrides = setting
    if sampler == "restart":
        assert published_nfe(overrides["num_steps"], overrides["restart_intervals"]) == nfe
    sample = samplers.get_sampler(sampler)
    sigmas = samplers.edm_sigmas(overrides["num_steps"], 0.002, 80.0, 7.0)
    options = {k: v for k, v in overrides.items() if k != "num_steps"}
    if sampler == "restart":
        options["restart_intervals"] = [tuple(i) for i in options["restart_intervals"]]
    seen = []

    def run(latents):
        images, info = sample(lambda x, s: x, latents, sigmas, key=jax.random.PRNGKey(0), **options)
        seen.append(info["nfe"])
        return images

    jax.eval_shape(run, jax.ShapeDtypeStruct((1, 1, 8, 8), jnp.float32))
    assert seen == [nfe]


def test_parse_run(bench):
    assert bench.parse_run("runs/x@500") == (Path("runs/x"), 500)
    assert bench.parse_run("runs/x") == (Path("runs/x"), None)


def test_merge_runs_replaces_only_rescored_rows(bench):
    def run(step, *rows):
        samplers = [{"setting": s, "weight_bits": b, "fd_train": fd} for s, b, fd in rows]
        return {"workdir": "runs/a", "step": step, "samplers": samplers}

    previous = [run(500, ("heun N=18", 0, 3.0)), run(2000, ("heun N=18", 0, 2.0), ("x", 4, 9.0))]
    merged = bench.merge_runs(previous, [run(2000, ("x", 4, 5.0), ("y", 0, 1.0))])
    by_step = {r["step"]: r for r in merged}
    assert by_step[500] == previous[0]
    rows = {(r["setting"], r["weight_bits"]): r["fd_train"] for r in by_step[2000]["samplers"]}
    assert rows == {("heun N=18", 0): 2.0, ("x", 4): 5.0, ("y", 0): 1.0}
