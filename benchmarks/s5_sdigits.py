"""S5 on sequential digits (L = 1024) and its permuted variant: test accuracy at the
best-validation evaluation (the S5 paper's protocol), over seeds, on a CPU.

  python benchmarks/s5_sdigits.py --seeds 0 1 2 -- --config.total_steps=1280
      # 6 runs of 1280 steps (the configs' default), 8-14 min each on a shared 2-core CPU
  python benchmarks/s5_sdigits.py --resume ...          # finish a partial sweep

Runs `python -m train.s5 --config=train/configs/{s5_sdigits,s5_psdigits}.py` once per seed,
sequentially, each in a fresh workdir, and writes benchmarks/results/s5_sdigits_cpu.json
after every run (so a partial sweep is kept), with each run's command and learning curve
(validation / test accuracy at every evaluation), and the validation curves as a PNG next
to it (--png).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ("s5_sdigits", "s5_psdigits")


def summary(runs: list[dict]) -> dict:
    accs = [r["best_val"]["test_accuracy"] for r in runs]
    return {
        "seeds": [r["seed"] for r in runs],
        "best_val_test_accuracy": accs,
        "mean": statistics.mean(accs),
        "sd": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "last_test_accuracy": [r["last"]["test_accuracy"] for r in runs],
        # Convergence: mean validation accuracy over the 3rd and the 4th quarter of the
        # evaluations, per seed (a plateau: the two agree within the eval noise, 1/n_val).
        "val_accuracy_quarters_3_4": [quarters_3_4(r) for r in runs if r.get("curve")],
    }


def quarters_3_4(run: dict) -> list[float]:
    val = run["curve"]["val_accuracy"]
    q = len(val) // 4
    return [statistics.mean(val[-2 * q : -q]), statistics.mean(val[-q:])]


def learning_curve(metrics_jsonl: Path) -> dict:
    """Every evaluation of a run: {"curve": {"step": [...], "val_accuracy": [...], ...}}."""
    keys = ("val_accuracy", "test_accuracy", "val_loss")
    curve = {"step": [], **{k: [] for k in keys}}
    for line in metrics_jsonl.read_text().splitlines():
        row = json.loads(line)
        if "eval/val_accuracy" in row:
            curve["step"].append(row["step"])
            for k in keys:
                curve[k].append(row.get(f"eval/{k}"))
    return {"curve": curve}


def plot(result: dict, path: Path):
    """Validation accuracy per evaluation, one line per seed, one panel per config."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(result["runs"], key=lambda n: CONFIGS.index(n) if n in CONFIGS else 99)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        for run in result["runs"][name]:
            curve = run.get("curve")
            if not curve:
                continue
            best = run["best_val"]
            (line,) = ax.plot(curve["step"], curve["val_accuracy"], label=f"seed {run['seed']}")
            ax.plot(best["step"], best["val_accuracy"], "o", color=line.get_color())
        s = result["summary"][name]
        ax.set_title(
            f"{name}: test at best val {100 * s['mean']:.1f} ± {100 * s['sd']:.1f} %", fontsize=10
        )
        ax.set_xlabel("step")
        ax.set_ylabel("validation accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--data_dir", default=None, help="TFDS data_dir (digits is generated)")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/s5_sdigits_cpu.json"))
    parser.add_argument("--png", default=None, help="default: --out with .png")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs already in --out and skip their (config, seed) pairs",
    )
    parser.add_argument(
        "--plot_only", action="store_true", help="recompute the summary and PNG of --out"
    )
    parser.add_argument("overrides", nargs="*", help="extra --config.* flags for train.s5")
    args = parser.parse_args()
    png = Path(args.png or Path(args.out).with_suffix(".png"))
    if args.plot_only:
        result = json.loads(Path(args.out).read_text())
        result["summary"] = {name: summary(runs) for name, runs in result["runs"].items()}
        Path(args.out).write_text(json.dumps(result, indent=2))
        plot(result, png)
        return

    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    if not commit and (REPO / "COMMIT").exists():  # run from an exported copy of a commit
        commit = (REPO / "COMMIT").read_text().strip()
    command = " ".join(["python", "benchmarks/s5_sdigits.py", *sys.argv[1:]])
    result = {
        "benchmark": "benchmarks/s5_sdigits.py",
        "command": [command],
        "commit": commit,
        "protocol": "test accuracy at the best validation accuracy (10% of train held out), "
        "evaluated every config.eval_every steps",
        "device": {"backend": "cpu", "cpu_count": os.cpu_count(), "platform": platform.platform()},
        "runs": {},
        "summary": {},
    }
    if args.resume and Path(args.out).exists():
        previous = json.loads(Path(args.out).read_text())
        result["runs"], result["summary"] = previous["runs"], previous["summary"]
        result["command"] = [*previous["command"], command]
    for name in args.configs:
        runs = result["runs"].setdefault(name, [])
        for seed in args.seeds:
            if any(r["seed"] == seed for r in runs):
                print(f"{name} seed {seed}: already in {args.out}, skipped", flush=True)
                continue
            with tempfile.TemporaryDirectory() as workdir:
                cmd = [
                    "python",
                    "-m",
                    "train.s5",
                    f"--config=train/configs/{name}.py",
                    f"--config.seed={seed}",
                    *([f"--config.data.data_dir={args.data_dir}"] if args.data_dir else []),
                    *args.overrides,
                ]
                start = time.perf_counter()
                subprocess.run(
                    [sys.executable, *cmd[1:], f"--workdir={workdir}"],
                    cwd=REPO,
                    check=True,
                    env={**os.environ, "JAX_PLATFORMS": "cpu"},
                )
                wall = time.perf_counter() - start
                final = json.loads((Path(workdir) / "final_metrics.json").read_text())
                curve = learning_curve(Path(workdir) / "metrics.jsonl")
            runs.append(
                {
                    "seed": seed,
                    "command": " ".join(cmd),
                    "commit": commit,
                    "wall_time_s": wall,
                    **final,
                    **curve,
                }
            )
            result["summary"][name] = summary(runs)
            Path(args.out).write_text(json.dumps(result, indent=2))
            plot(result, png)
            print(
                f"{name} seed {seed}: best-val test accuracy "
                f"{final['best_val']['test_accuracy']:.4f} (step {final['best_val']['step']}), "
                f"last {final['last']['test_accuracy']:.4f}, {wall:.0f} s",
                flush=True,
            )
    for name, s in result["summary"].items():
        print(f"{name}: {100 * s['mean']:.2f} ± {100 * s['sd']:.2f} % over seeds {s['seeds']}")


if __name__ == "__main__":
    main()
