"""EDM2 post-hoc EMA: reconstruct EMA params of any width from a run's snapshots; score by FD.

  python -m train.diffusion --workdir=runs/d --config.ema.posthoc_snapshot_every=50
  python -m train.posthoc_ema --workdir=runs/d --sigma_rel=0.02,0.05,0.1,0.15,0.2 --seeds=0,1

Reads <workdir>/ema_snapshots/step_*.npz (the two tracked power-function EMAs, saved during
training), solves EDM2's least squares for each --sigma_rel at snapshot --step (default: the
last), and writes to <workdir>/posthoc_ema/: params_step<step>_sigma<σ>.npz (flat "a/b/c"
param arrays, float32), and for digits models (sampled with the config saved in the
checkpoint, or --config's) fd_vs_sigma_rel.json + .png, with the checkpoint's own EMA at the
same step as a reference line when that checkpoint exists.
"""

import json
import logging
import sys
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import flags
from etils import epath
from flax import traverse_util

from jaxml import parallel
from jaxml.training import cli, posthoc_ema
from jaxml.training.checkpoint import Checkpointer

cli.define_flags(str(Path(__file__).parent / "configs" / "diffusion_digits.py"))
flags.DEFINE_string(
    "sigma_rel", "0.02,0.05,0.1,0.15,0.2", "Comma-separated EMA widths (relative std) to build."
)
flags.DEFINE_integer("step", None, "Snapshot step to reconstruct at (default: the last).")
flags.DEFINE_string("seeds", "0,1,2", "Comma-separated sampling seeds (mean ± s.e. over them).")
flags.DEFINE_integer("num_samples", 2048, "Images per seed for the digits evaluation.")
flags.DEFINE_bool("score", True, "Sample and score FD-digits (digits models only).")
flags.DEFINE_string("out", None, "Output folder (default <workdir>/posthoc_ema).")
log = logging.getLogger("train.posthoc_ema")


def parse_floats(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise cli.ConfigError(f"--{name}={text!r}: expected comma-separated numbers") from None


def run_config(workdir, config, argv) -> ml_collections.ConfigDict:
    """The latest checkpoint's config with the --config.* flags given applied, else --config's."""
    directory = epath.Path(workdir) / "checkpoints"
    if not directory.is_dir():
        return config
    checkpointer = Checkpointer(directory, save_every=1)
    step = checkpointer.latest_step()
    saved = checkpointer.saved_config(step) if step is not None else None
    checkpointer.close()
    if saved is None:
        return config
    merged = ml_collections.ConfigDict(saved)
    for key in (a[len("--config.") :].split("=", 1)[0] for a in argv if a.startswith("--config.")):
        *parents, leaf = key.split(".")
        target, source = merged, config
        for p in parents:
            target, source = target[p], source[p]
        with target.unlocked():
            target[leaf] = source[leaf]
    return merged


def make_sampler(config):
    """The config's sampler, built (and compiled) once for every width scored."""
    from jaxml.diffusion import recipe

    return recipe.make_sample_fn(recipe.build_network(config.model), config)


def score(config, sample_fn, params, seeds, num_samples, mesh) -> dict:
    """`metrics.evaluate_digits` of `num_samples` images per seed (the config's sampler):
    FD-digits and KID per seed, their mean ± s.e., and FD's floor at that N."""
    from jaxml.diffusion import recipe

    evaluations = recipe.evaluate_digits_per_seed(
        sample_fn, params, config, seeds, num_samples, mesh
    )
    fds = [float(e["fd_train"]) for e in evaluations]
    kids = [float(e["kid_train"]) for e in evaluations]
    se = lambda v: float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
    return {
        "fd_digits": fds,
        "fd_digits_mean": float(np.mean(fds)),
        "fd_digits_se": se(fds),
        "fd_digits_floor": float(evaluations[0]["fd_train_floor"]),
        "kid_digits": kids,
        "kid_digits_mean": float(np.mean(kids)),
        "kid_digits_se": se(kids),
    }


def checkpoint_ema(workdir, config, step, mesh):
    """The checkpoint's own (traditional) EMA params at `step`, or None without that step."""
    from jaxml.diffusion import recipe

    directory = epath.Path(workdir) / "checkpoints"
    if not directory.is_dir():
        return None
    checkpointer = Checkpointer(directory, save_every=1)
    try:
        if step not in checkpointer.all_steps():
            return None
        return recipe.load_ema_params(checkpointer, step, config, mesh)[1]
    finally:
        checkpointer.close()


def add_paired_differences(results: dict) -> dict:
    """FD of each width minus the checkpoint EMA's, seed by seed (same latents per seed, so the
    paired difference is far less noisy than the per-width spread over seeds)."""
    ref = results.get("checkpoint_ema")
    if ref:
        for row in results["posthoc"]:
            diffs = [a - b for a, b in zip(row["fd_digits"], ref["fd_digits"], strict=True)]
            row["minus_checkpoint_ema"] = diffs
            row["minus_checkpoint_ema_mean"] = float(np.mean(diffs))
    return results


def save_plot(results: dict, path: epath.Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["posthoc"]
    x = [r["sigma_rel"] for r in rows]
    mean = [r["fd_digits_mean"] for r in rows]
    spread = [r["fd_digits_se"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar(x, mean, yerr=spread, marker="o", capsize=3, label="post-hoc EMA")
    ref = results.get("checkpoint_ema")
    if ref:
        ax.axhline(ref["fd_digits_mean"], color="gray", ls="--", label="checkpoint EMA")
    ax.axhline(rows[0]["fd_digits_floor"], color="green", ls=":", label="real digits, same N")
    for s in results["tracked_sigma_rels"]:
        ax.axvline(s, color="k", alpha=0.15)
    ax.set_xlabel("EMA width σ_rel")
    ax.set_ylabel(f"FD-digits (N={results['num_samples']}, mean ± s.e. over seeds)")
    ax.set_title(f"post-hoc EMA at step {results['step']}")
    ax.legend()
    fig.tight_layout()
    with path.open("wb") as f:
        fig.savefig(f, dpi=120)
    plt.close(fig)


def main(config, workdir):
    fl = flags.FLAGS
    sigma_rels = posthoc_ema.check_sigma_rels(parse_floats(fl.sigma_rel, "sigma_rel"))
    seeds = [int(s) for s in parse_floats(fl.seeds, "seeds")]
    snapshot_dir = workdir / posthoc_ema.SNAPSHOT_DIR
    config = run_config(workdir, config, sys.argv[1:])
    scoring = fl.score and config.data.name == "digits"
    if scoring and (fl.num_samples <= 0 or fl.num_samples % jax.device_count() or not seeds):
        raise cli.ConfigError(
            f"--num_samples={fl.num_samples} must be a positive multiple of the device count "
            f"({jax.device_count()}) and --seeds non-empty"
        )
    start = time.perf_counter()
    step, reconstructed = posthoc_ema.reconstruct(snapshot_dir, sigma_rels, fl.step)
    tracked = posthoc_ema.load_snapshot(posthoc_ema.list_snapshots(snapshot_dir)[-1][1])[1]
    log.info(
        "reconstructed %d widths at step %d in %.1fs",
        len(sigma_rels),
        step,
        time.perf_counter() - start,
    )
    out = epath.Path(fl.out) if fl.out else workdir / "posthoc_ema"
    if jax.process_index() == 0:
        out.mkdir(parents=True, exist_ok=True)
        for sigma, params in reconstructed.items():
            with (out / f"params_step{step}_sigma{sigma:.3f}.npz").open("wb") as f:
                np.savez(f, **traverse_util.flatten_dict(params, sep="/"))
    results = {
        "command": "python -m train.posthoc_ema " + " ".join(sys.argv[1:]),
        "step": step,
        "tracked_sigma_rels": list(tracked),
        "num_samples": fl.num_samples,
        "seeds": seeds,
        "posthoc": [],
    }
    if not scoring:
        print(f"post-hoc EMA params for σ_rel {list(sigma_rels)} at step {step} in {out}")
        return
    mesh = parallel.make_mesh(config.mesh)
    sample_fn = make_sampler(config)
    for sigma, params in reconstructed.items():
        row = {"sigma_rel": sigma, **score(config, sample_fn, params, seeds, fl.num_samples, mesh)}
        results["posthoc"].append(row)
        log.info(
            "σ_rel %.3f: FD-digits %.3f ± %.3f", sigma, row["fd_digits_mean"], row["fd_digits_se"]
        )
    ref_params = checkpoint_ema(workdir, config, step, mesh)
    if ref_params is not None:
        results["checkpoint_ema"] = score(
            config, sample_fn, ref_params, seeds, fl.num_samples, mesh
        )
    add_paired_differences(results)
    if jax.process_index() == 0:
        (out / "fd_vs_sigma_rel.json").write_text(json.dumps(results, indent=2))
        save_plot(results, out / "fd_vs_sigma_rel.png")
        best = min(results["posthoc"], key=lambda r: r["fd_digits_mean"])
        print(
            f"step {step}: best σ_rel {best['sigma_rel']:.3f} "
            f"(FD-digits {best['fd_digits_mean']:.3f}); results in {out}"
        )


if __name__ == "__main__":
    cli.run_main(main)
