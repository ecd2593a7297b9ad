"""The digits evaluation at matched N: FD (train / test, with floors at that N), KID, P/R, copies.

  python -m train.diffusion --workdir=runs/default --config.eval_every=500
  for s in 0 1 2; do python -m train.sample --workdir=runs/default --step=2000 \
      --num_samples=8192 --seed=$s --out=runs/default/eval/s2000_seed$s; done
  python benchmarks/diffusion_digits_eval.py \
      --pools step2000=runs/default/eval/s2000_seed* step1000=runs/default/eval/s1000_seed*

Each pool is one checkpoint sampled with several latent seeds (one folder of
train.sample output per seed). For each N in --sizes and each seed, the
first N samples of that seed are scored by `metrics.evaluate_digits`; every
number is reported as mean ± standard error over the seeds. Writes
benchmarks/results/diffusion_digits_eval_cpu.json and a markdown table
(diffusion_digits_eval_cpu.md).
"""

import argparse
import glob
import json
import sys
import time
from pathlib import Path

import numpy as np

from jaxml.diffusion import metrics, recipe

sys.path.insert(0, str(Path(__file__).resolve().parent))  # diffusion_digits next to this file
from diffusion_digits import mean_se  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TABLE_KEYS = [
    ("fd_train", "FD vs train"),
    ("fd_train_floor", "floor (same N)"),
    ("fd_test", "FD vs test"),
    ("fd_test_floor", "floor (same N)"),
    ("kid_train", "KID×10³ vs train"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("memorization_rate", "copies"),
]


def load_seeds(pattern: str) -> dict[str, np.ndarray]:
    """{seed group: images}; folders NAME_c1, NAME_c2, ... (more chunks of independent latents,
    train.sample --seed=g+10*c) are appended to folder NAME's samples."""
    folders = sorted(glob.glob(pattern))
    if not folders:
        raise SystemExit(f"no sample folders match {pattern}")
    groups: dict[str, list] = {}
    for folder in folders:
        if not list(Path(folder).glob("samples_*.npz")):
            continue
        images = recipe.read_shards(folder)["images"]
        groups.setdefault(Path(folder).name.split("_c")[0], []).append(images)
    return {name: np.concatenate(chunks) for name, chunks in groups.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pools", nargs="+", required=True, help="name=glob of seed folders")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--out", default=str(RESULTS / "diffusion_digits_eval_cpu.json"))
    args = parser.parse_args()
    start = time.perf_counter()

    results = {}
    for spec in args.pools:
        name, pattern = spec.split("=", 1)
        seeds = load_seeds(pattern)
        results[name] = {"seeds": list(seeds)}
        for n in args.sizes:
            usable = {s: x[:n] for s, x in seeds.items() if len(x) >= n}
            if len(usable) < 2:
                continue
            per_seed = {
                s: metrics.evaluate_digits(x, data_dir=args.data_dir) for s, x in usable.items()
            }
            keys = next(iter(per_seed.values())).keys()
            summary = {k: mean_se([r[k] for r in per_seed.values()]) for k in keys}
            results[name][f"N={n}"] = {"mean_se": summary, "per_seed": per_seed}
            fd, se = summary["fd_train"]
            floor = summary["fd_train_floor"][0]
            print(f"{name} N={n}: FD vs train {fd:.3f} ± {se:.3f} (floor {floor:.3f})", flush=True)

    lines = [
        "| checkpoint | N | " + " | ".join(label for _, label in TABLE_KEYS) + " |",
        "|---" * (2 + len(TABLE_KEYS)) + "|",
    ]
    for name, entry in results.items():
        for key, value in entry.items():
            if not key.startswith("N="):
                continue
            cells = []
            for k, _ in TABLE_KEYS:
                m, se = value["mean_se"][k]
                scale = 1e3 if k.startswith("kid") else 1.0
                if k.endswith("floor"):
                    cells.append(f"{m * scale:.3f}")
                else:
                    cells.append(f"{m * scale:.3f} ± {se * scale:.3f}")
            lines.append(f"| {name} | {key[2:]} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "benchmarks/diffusion_digits_eval.py",
                "command": "python benchmarks/diffusion_digits_eval.py " + " ".join(sys.argv[1:]),
                "feature_space": metrics.DIGITS_CLASSIFIER_VERSION,
                "seconds": time.perf_counter() - start,
                "note": "mean ± s.e. over latent seeds; floors: FD of N real unseen images "
                "at the same N (1/N fit, metrics.fd_floor_curve)",
                "results": results,
            },
            indent=2,
        )
    )
    out.with_suffix(".md").write_text(table + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
