"""benchmarks/samplers.py, the cut-main-grid section: Restart with K = 0 is Heun on the cut
grid, the NFE formula, the pairing with Heun at equal NFE, and the report with and without
the section."""

import json
from pathlib import Path

import benchmark_scripts
import jax
import numpy as np
import pytest

from jaxml.diffusion import edm_sigmas, ideal, samplers

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "samplers_cpu.json"


@pytest.fixture(scope="module")
def problems():
    # Registered under their own names: the report imports them by name.
    benchmark_scripts.load("samplers_metric", "samplers_metric")
    return benchmark_scripts.load("samplers_problems", "samplers_problems")


@pytest.fixture(scope="module")
def ring():
    means = np.stack([np.cos(np.arange(4) * np.pi / 2), np.sin(np.arange(4) * np.pi / 2)], 1)
    denoise = ideal.gmm_denoiser(
        means.astype(np.float32), np.full(4, 0.1, np.float32), np.full(4, 0.25, np.float32)
    )
    latents = 80.0 * jax.random.normal(jax.random.PRNGKey(0), (64, 2))
    return denoise, latents


@pytest.mark.parametrize("n_main", [6, 10])
def test_restart_without_restarts_is_heun_on_the_cut_grid(problems, ring, n_main):
    denoise, latents = ring
    fn, nfe, _ = problems.restart_call("restart", n_main, 0)
    x, info = jax.jit(lambda x, k: fn(denoise, x, k))(latents, jax.random.PRNGKey(1))
    ref, ref_info = jax.jit(lambda x: samplers.heun(denoise, x, edm_sigmas(n_main)))(latents)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(ref))
    assert int(info["nfe"]) == nfe == int(ref_info["nfe"]) == 2 * n_main - 1
    if n_main != 6:
        return
    # ...and restarts change the samples, so the identity above is not vacuous.
    fn2 = problems.restart_call("restart", n_main, 2)[0]
    x2, info2 = jax.jit(lambda x, k: fn2(denoise, x, k))(latents, jax.random.PRNGKey(1))
    assert not np.allclose(np.asarray(x2), np.asarray(ref))
    assert int(info2["nfe"]) == 2 * n_main - 1 + 2 * 2 * (3 - 1)  # N_R = 3: 4 calls a restart


@pytest.mark.parametrize("family", ["restart", "restart-wide"])
def test_restart_nfe_formula_counts_the_denoiser_calls(problems, ring, family):
    """The NFE the benchmark pairs on is the number of denoiser calls actually made."""
    denoise, latents = ring
    calls = []

    def counted(x, sigma):
        jax.debug.callback(lambda: calls.append(1))
        return denoise(x, sigma)

    n_r = problems.RESTART_FAMILIES[family]["N_R"]
    for K in (0, 3) if family == "restart" else (3,):
        calls.clear()
        fn, nfe, desc = problems.restart_call(family, 6, K)
        x, info = jax.jit(lambda x, k, fn=fn: fn(counted, x, k))(latents, jax.random.PRNGKey(2))
        jax.block_until_ready(x)
        jax.effects_barrier()
        assert len(calls) == int(info["nfe"]) == nfe == 11 + K * 2 * (n_r - 1)
        assert desc == f"N_main=6, K={K}"


def test_cut_grid_pairs_every_restart_point_with_heun_at_equal_nfe(problems):
    configs, nfes = problems.cut_grid_configs(("restart", "restart-wide"), (6, 10), (0, 1, 2, 4))
    assert [c[:3] for c in configs if c[2] == 0] == [("restart", 6, 0), ("restart", 10, 0)]
    assert len(configs) == 2 + 2 * 2 * 3
    assert nfes == sorted({c[3] for c in configs})
    for fam, n_main, K, nfe in configs:
        n_r = problems.RESTART_FAMILIES[fam]["N_R"]
        assert nfe == 2 * n_main - 1 + K * 2 * (n_r - 1)
        _, expected, desc = problems.sampler_call("heun", nfe)
        n = problems.matched_steps(nfe)
        assert 2 * n - 1 == nfe == expected and desc == f"N={n}"
    with pytest.raises(ValueError):
        problems.matched_steps(20)


def _fake_cut(problems):
    """A tiny cut-grid result: per-chunk SW2 made up so that the verdicts are known."""
    rng = np.random.default_rng(0)
    chunks = 6
    row = lambda nfe, level, **kw: dict(
        nfe=nfe,
        sw2=level,
        sw2_std=0.01,
        per_chunk=(level + rng.normal(0, 1e-3, chunks)).tolist(),
        **kw,
    )
    per = {
        "restart N_main=6": [
            row(11, 2.0, config="N_main=6, K=0", n_main=6, K=0),
            row(15, 1.0, config="N_main=6, K=1", n_main=6, K=1),
        ],
        "heun": [row(11, 2.0, config="N=6"), row(15, 1.5, config="N=8")],
        "stochastic": [row(11, 2.5, config="N=6"), row(15, 0.5, config="N=8")],
    }
    per["heun"][0]["per_chunk"] = per["restart N_main=6"][0]["per_chunk"]  # K = 0 is heun
    res = dict(floor=dict(mean=1.0, std=0.1), chunks=chunks, n_per_chunk=10, exact=per)
    settings = dict(main_steps=[6], restarts=[0, 1], chunks=chunks, variants={"exact": [0, 1]})
    return dict(settings=settings, problems={"ring2d": res}, seconds=1.0)


def test_cut_grid_table_marks_and_counts(problems, tmp_path):
    report = benchmark_scripts.load("samplers_report", "samplers_report")
    cut = _fake_cut(problems)
    table = report.cut_grid_markdown(cut)
    # NFE 15: restart (1.0) beats heun (1.5), loses to stochastic (0.5, the best: bold).
    assert "| ring2d · exact · 15 | 1.50 | **0.50** | 1.00 (K=1) ▲▼ |" in table
    assert "| restart · exact | 1/0/0 | 0/0/1 | 0 of 1 |" in table
    report.plot_cut_grid(cut, tmp_path / "cut.png")
    assert (tmp_path / "cut.png").stat().st_size > 0


def test_report_reads_results_without_the_cut_grid(problems):
    """--replot of a JSON written before the section existed: no cut-grid table."""
    report = benchmark_scripts.load("samplers_report", "samplers_report")
    if RESULTS.exists():
        results = json.loads(RESULTS.read_text())["results"]
        results.pop("cutgrid", None)
    else:
        results = {}
    table = report.table_markdown(results)
    assert "Cut main grid" not in table
    with_cut = dict(results, cutgrid=_fake_cut(problems))
    assert "Cut main grid" in report.cut_grid_markdown(with_cut["cutgrid"])
