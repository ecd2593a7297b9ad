"""Trained digits models: FD-digits vs NFE per sampler, FD vs training step, PFGM++ vs EDM.

  python -m train.diffusion --workdir=runs/diffusion_pfgmpp
  python -m train.diffusion --workdir=runs/diffusion_edm \
      --config=train/configs/diffusion_digits.py:edm
  python benchmarks/diffusion_digits.py --runs runs/diffusion_pfgmpp runs/diffusion_edm

Samples `--num_samples` images per latent seed (`--seeds`, the same latents for every
sampler, so differences between samplers are paired) from each run's last EMA checkpoint
with Heun, EDM-stochastic and Restart at several NFE, scores each set with
`metrics.evaluate_digits` (FD against train with its floor at the same N, KID) and reports
mean ± s.e. over the seeds. Writes benchmarks/results/diffusion_digits_cpu.json and
diffusion_digits_cpu.png.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402

from jaxml import parallel  # noqa: E402
from jaxml.diffusion import metrics, recipe  # noqa: E402
from jaxml.diffusion.image_grid import save_image_grid  # noqa: E402
from jaxml.training.checkpoint import Checkpointer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

# (label, sampler, overrides of config.sampler)
SETTINGS = [
    *[(f"heun N={n}", "heun", {"num_steps": n}) for n in (5, 10, 18, 35)],
    *[
        (
            f"stochastic N={n}",
            "stochastic",
            {"num_steps": n, "S_churn": 40.0, "S_min": 0.05, "S_max": 50.0, "S_noise": 1.003},
        )
        for n in (5, 10, 18, 35)
    ],
    *[
        (
            f"restart N=10 K={k}",
            "restart",
            {"num_steps": 10, "restart_intervals": ((3, k, 0.06, 0.30),)},
        )
        for k in (1, 2)
    ],
    *[
        (
            f"restart N=18 K={k}",
            "restart",
            {"num_steps": 18, "restart_intervals": ((3, k, 0.06, 0.30),)},
        )
        for k in (1, 2, 5)
    ],
]


def mean_se(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(se)


def evaluate_run(workdir: Path, num_samples: int, seeds: list[int], grid_out, settings):
    checkpointer = Checkpointer(workdir / "checkpoints", save_every=1)
    step = checkpointer.latest_step()
    config = ml_collections.ConfigDict(checkpointer.saved_config(step))
    mesh = parallel.make_mesh(config.mesh)
    network, ema_params = recipe.load_ema_params(checkpointer, step, config, mesh)
    checkpointer.close()
    rows = []
    for label, sampler, overrides in settings:
        c = config.copy_and_resolve_references()
        with c.unlocked():
            c.sampler.name = sampler
            c.sampler.update(overrides)
        start = time.perf_counter()
        sample_fn = recipe.make_sample_fn(network, c)
        evaluations = []
        for seed in seeds:
            images, nfe = recipe.sample_images(
                sample_fn,
                ema_params,
                jax.random.PRNGKey(seed),
                c,
                num_samples,
                batch_sharding=parallel.batch_sharding(mesh),
                replicated=parallel.replicated(mesh),
            )
            evaluations.append(metrics.evaluate_digits(images, data_dir=config.data.data_dir))
            if grid_out is not None and label == "restart N=18 K=2" and seed == seeds[0]:
                save_image_grid(images[:100], grid_out, scale=4)
        row = {"setting": label, "sampler": sampler, "nfe": nfe}
        for key in ("fd_train", "kid_train", "precision", "recall"):
            row[key], row[key + "_se"] = mean_se([e[key] for e in evaluations])
            row[key + "_per_seed"] = [float(e[key]) for e in evaluations]
        row["fd_train_floor"] = float(evaluations[0]["fd_train_floor"])
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        print(
            f"{workdir.name}: {label:22s} NFE {nfe:3d}  FD {row['fd_train']:7.3f} "
            f"± {row['fd_train_se']:.3f} (floor {row['fd_train_floor']:.3f})  "
            f"KID×10³ {1e3 * row['kid_train']:.2f} ± {1e3 * row['kid_train_se']:.2f}",
            flush=True,
        )
    history = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    num_eval = config.eval.num_samples  # the training eval's N (its own floor differs)
    fd_vs_step = [
        {"step": r["step"], "fd_digits": r["eval/fd_digits"], "N": num_eval}
        for r in history
        if "eval/fd_digits" in r
    ]
    return {
        "workdir": str(workdir),
        "step": step,
        "D": config.diffusion.D,
        "train_steps": config.total_steps,
        "batch_size": config.data.batch_size,
        "samplers": rows,
        "fd_vs_training_step": fd_vs_step,
    }


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", nargs="+", required=True, type=Path)
    parser.add_argument("--num_samples", type=int, default=2048, help="images per seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--settings",
        nargs="+",
        default=[label for label, _, _ in SETTINGS],
        help="labels of SETTINGS to run, e.g. 'heun N=18' 'restart N=18 K=2' (default: all)",
    )
    args = parser.parse_args()

    known = {label: (label, sampler, o) for label, sampler, o in SETTINGS}
    unknown = [label for label in args.settings if label not in known]
    if unknown:
        parser.error(f"unknown --settings {unknown}; choose from {list(known)}")
    settings = [known[label] for label in args.settings]
    reference = metrics.digits_reference_numbers()
    out = RESULTS / "diffusion_digits_cpu.json"
    previous = json.loads(out.read_text())["runs"] if out.exists() else []
    # Runs scored before the multi-seed evaluation (one FD-digits per setting) are dropped.
    previous = [r for r in previous if all("fd_train" in row for row in r["samplers"])]
    results = {
        "benchmark": "benchmarks/diffusion_digits.py",
        "num_samples": args.num_samples,
        "seeds": args.seeds,
        "command": "python benchmarks/diffusion_digits.py " + " ".join(sys.argv[1:]),
        "device": {"backend": jax.default_backend(), "devices": jax.device_count()},
        "reference": reference,
        "runs": [],
    }
    for workdir in args.runs:
        name = workdir.name
        results["runs"].append(
            evaluate_run(
                workdir,
                args.num_samples,
                args.seeds,
                RESULTS / f"diffusion_digits_{name}_samples.png",
                settings,
            )
        )
    done = {r["workdir"] for r in results["runs"]}  # runs evaluated earlier are kept
    results["runs"] = [r for r in previous if r["workdir"] not in done] + results["runs"]
    out.write_text(json.dumps(results, indent=2))

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in results["runs"]:
        d = "∞ (EDM)" if run["D"] is None else run["D"]
        for sampler, marker in (("heun", "o"), ("stochastic", "s"), ("restart", "^")):
            pts = sorted(
                (r["nfe"], r["fd_train"], r["fd_train_se"])
                for r in run["samplers"]
                if r["sampler"] == sampler
            )
            x, y, err = zip(*pts)
            axes[0].errorbar(x, y, yerr=err, marker=marker, capsize=2, label=f"D={d} {sampler}")
        steps = [(r["step"], r["fd_digits"]) for r in run["fd_vs_training_step"]]
        axes[1].plot(*zip(*steps), marker="o", label=f"D={d} (Restart, EMA)")
    floor = results["runs"][-1]["samplers"][0]["fd_train_floor"]
    axes[0].axhline(floor, color="gray", ls="--", label=f"real digits, N={args.num_samples}")
    for ax in axes:
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    axes[0].set(
        xlabel="NFE",
        ylabel=f"FD-digits (N={args.num_samples}, mean ± s.e., {len(args.seeds)} seeds)",
        title="FD-digits vs NFE (last EMA checkpoint)",
    )
    axes[1].set(
        xlabel="training step", ylabel="FD-digits (training eval's N)", title="training evals"
    )
    fig.tight_layout()
    fig.savefig(RESULTS / "diffusion_digits_cpu.png", dpi=110)
    print(json.dumps(reference))


if __name__ == "__main__":
    main()
