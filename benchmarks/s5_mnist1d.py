"""S5 on MNIST-1D: test accuracy over seeds, with wall time per run, next to published baselines.

  python benchmarks/s5_mnist1d.py --seeds 0 1 2     # ~3-4 min per seed on a 2-core CPU

Runs `python -m train.s5` (default config) once per seed in a fresh workdir and
writes benchmarks/results/s5_mnist1d_cpu.json.
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
# Greydanus (2020), MNIST-1D paper/README: test accuracy (%).
PUBLISHED = {"logistic regression": 32, "MLP": 68, "CNN": 94, "GRU": 91, "human": 96}


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/s5_mnist1d_cpu.json"))
    parser.add_argument("overrides", nargs="*", help="extra --config.* flags for train.s5")
    args = parser.parse_args()

    runs = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as workdir:
            cmd = [
                sys.executable,
                "-m",
                "train.s5",
                f"--workdir={workdir}",
                f"--config.seed={seed}",
                *args.overrides,
            ]
            start = time.perf_counter()
            subprocess.run(cmd, cwd=REPO, check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
            wall = time.perf_counter() - start
            final = json.loads((Path(workdir) / "final_metrics.json").read_text())["last"]
        runs.append(
            {
                "seed": seed,
                "test_accuracy": final["test_accuracy"],
                "test_loss": final["test_loss"],
                "steps": final["step"],
                "wall_time_s": wall,
            }
        )
        print(
            f"seed {seed}: test accuracy {final['test_accuracy']:.4f} in {wall:.0f} s", flush=True
        )

    accs = [r["test_accuracy"] for r in runs]
    result = {
        "benchmark": "benchmarks/s5_mnist1d.py",
        "command": " ".join(["python", "benchmarks/s5_mnist1d.py", *sys.argv[1:]]),
        "config": " ".join(["train/configs/s5_mnist1d.py", *args.overrides]),
        "device": {"backend": "cpu", "cpu_count": os.cpu_count(), "platform": platform.platform()},
        "runs": runs,
        "test_accuracy_mean": statistics.mean(accs),
        "test_accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "published_test_accuracy_percent": PUBLISHED,
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(
        f"S5 MNIST-1D: {100 * result['test_accuracy_mean']:.2f} ± "
        f"{100 * result['test_accuracy_std']:.2f} % over seeds {args.seeds} -> {args.out}"
    )


if __name__ == "__main__":
    main()
