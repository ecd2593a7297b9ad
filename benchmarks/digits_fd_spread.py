"""Why does FD-digits move between latent seeds more than between training steps? A study.

  python -m train.diffusion --workdir=runs/default --config.eval_every=500
  for s in 0 1 2; do python -m train.sample --workdir=runs/default --step=1000 \
      --num_samples=2048 --seed=$s --out=runs/default/eval/s1000_seed$s; done   # also 1500, 2000
  python benchmarks/digits_fd_spread.py --pools step1000=runs/default/eval/s1000_seed* \
      step1500=runs/default/eval/s1500_seed* step2000=runs/default/eval/s2000_seed*

For several feature spaces (the FD-digits classifier's 64-d penultimate layer,
its 512-d hidden layer, its logits, L2-normalised features, a 20-d pixel PCA,
classifiers trained with input noise) it computes FD against the train split
on disjoint subsets of N samples of each checkpoint's pool (subsets of
independent latents: the same as different seeds) and reports the subsets'
mean, standard deviation, and how many standard deviations separate two
checkpoints. Also a diagnosis of the 64-d space: how much of the generated
features' spread comes from the 1 % most outlying samples. Writes
benchmarks/results/digits_fd_spread_cpu.json.
"""

import argparse
import glob
import json
import time
from pathlib import Path

import numpy as np

from jaxml.diffusion import metrics
from jaxml.diffusion.metrics import digits, frechet

RESULTS = Path(__file__).resolve().parent / "results"


def load_pool(pattern: str) -> np.ndarray:
    files = sorted(glob.glob(pattern))
    if not files:
        raise SystemExit(f"no samples.npz under {pattern}")
    arrays = []
    for f in files:
        path = Path(f) if f.endswith(".npz") else Path(f) / "samples.npz"
        if not path.is_file():
            continue
        with np.load(path) as data:
            arrays.append(np.clip(data["images"].astype(np.float32), -1, 1))
    return np.concatenate(arrays)


def mlp_layers(params, x):
    """(hidden 512, penultimate 64, logits 10) of a DigitsClassifier, in numpy."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    p = {k: {n: np.asarray(v, np.float64) for n, v in d.items()} for k, d in params.items()}
    h = np.maximum(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], 0)
    f = np.maximum(h @ p["penultimate"]["kernel"] + p["penultimate"]["bias"], 0)
    return h, f, f @ p["logits"]["kernel"] + p["logits"]["bias"]


def feature_spaces(train_x, data_dir, noise_levels):
    """{name: images (N, 8, 8, 1) -> features (N, F)}."""
    spaces = {}
    v1, _ = metrics.digits_classifier(None, data_dir)
    spaces["mlp64 (v1 FD-digits)"] = lambda x: mlp_layers(v1, x)[1]
    spaces["mlp512 (v1 hidden)"] = lambda x: mlp_layers(v1, x)[0]
    spaces["logits10 (v1)"] = lambda x: mlp_layers(v1, x)[2]

    def l2(x):
        f = mlp_layers(v1, x)[1]
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-8)

    spaces["mlp64 L2-normalised"] = l2
    flat = train_x.reshape(len(train_x), -1).astype(np.float64)
    mean = flat.mean(0)
    _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
    spaces["pixel PCA-20"] = lambda x: (x.reshape(len(x), -1) - mean) @ vt[:20].T
    for sigma in noise_levels:
        params, info = digits.train_digits_classifier(data_dir, input_noise_std=sigma)
        print(f"classifier trained with input noise {sigma}: test acc {info['test_accuracy']:.3f}")
        spaces[f"mlp64 noise{sigma}"] = lambda x, p=params: mlp_layers(p, x)[1]
        spaces[f"mlp512 noise{sigma}"] = lambda x, p=params: mlp_layers(p, x)[0]
    return spaces


def fd_subsets(features, ref_stats, n):
    values = [
        frechet.frechet_distance(*frechet.feature_statistics(features[i : i + n]), *ref_stats)
        for i in range(0, len(features) - n + 1, n)
    ]
    return np.array(values)


def outlier_share(features, ref_mu, top=0.01):
    """Share of sum ||f - mu_train||² carried by the `top` most distant samples."""
    d2 = ((features - ref_mu) ** 2).sum(1)
    k = max(1, int(round(top * len(d2))))
    return float(np.sort(d2)[-k:].sum() / d2.sum())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pools", nargs="+", required=True, help="name=glob of sample folders")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--noise_levels", type=float, nargs="*", default=[0.2, 0.5])
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--out", default=str(RESULTS / "digits_fd_spread_cpu.json"))
    args = parser.parse_args()

    start = time.perf_counter()
    train_x, _ = metrics._load_digits("train", args.data_dir)
    test_x, _ = metrics._load_digits("test", args.data_dir)
    pools = {}
    for spec in args.pools:
        name, pattern = spec.split("=", 1)
        pools[name] = load_pool(pattern)
        print(f"{name}: {len(pools[name])} samples")
    spaces = feature_spaces(train_x, args.data_dir, args.noise_levels)
    rng = np.random.default_rng(0)
    results = {}
    for space, fn in spaces.items():
        ref = fn(train_x)
        ref_stats = frechet.feature_statistics(ref)
        entry = {"per_pool": {}, "real_test_bootstrap": {}}
        test_f = fn(test_x)
        for name, pool in pools.items():
            feats = fn(pool)
            row = {
                "outlier_share_top1pct": outlier_share(feats, ref_stats[0]),
                "outlier_share_top1pct_real_test": outlier_share(test_f, ref_stats[0]),
            }
            for n in args.sizes:
                v = fd_subsets(feats, ref_stats, n)
                if len(v) >= 2:
                    row[f"N={n}"] = dict(
                        mean=float(v.mean()),
                        std=float(v.std(ddof=1)),
                        cv=float(v.std(ddof=1) / v.mean()),
                        subsets=len(v),
                        values=[round(float(x), 4) for x in v],
                    )
            entry["per_pool"][name] = row
        for n in args.sizes:  # floor: N real unseen images (with replacement) vs train
            v = np.array(
                [
                    frechet.frechet_distance(
                        *frechet.feature_statistics(test_f[rng.integers(0, len(test_f), n)]),
                        *ref_stats,
                    )
                    for _ in range(8)
                ]
            )
            entry["real_test_bootstrap"][f"N={n}"] = dict(
                mean=float(v.mean()), std=float(v.std(ddof=1))
            )
        names = list(pools)
        for n in args.sizes:  # separation of consecutive checkpoints in single-measurement stds
            key = f"N={n}"
            for a, b in zip(names, names[1:]):
                ra, rb = entry["per_pool"][a].get(key), entry["per_pool"][b].get(key)
                if ra and rb:
                    gap = ra["mean"] - rb["mean"]
                    entry[f"{a}->{b} {key}"] = dict(
                        gap=gap,
                        relative_gap=gap / rb["mean"],
                        z=gap / np.hypot(ra["std"], rb["std"]),
                    )
        results[space] = entry
        summary = ", ".join(
            f"{k}: z={v['z']:.1f} rel={v['relative_gap']:.2f}"
            for k, v in entry.items()
            if isinstance(v, dict) and "z" in v
        )
        cvs = ", ".join(
            f"{p} {k} cv={r[k]['cv']:.3f}"
            for p, r in entry["per_pool"].items()
            for k in r
            if k.startswith("N=")
        )
        print(f"{space}: {summary}\n    {cvs}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "benchmarks/digits_fd_spread.py",
                "pools": {k: len(v) for k, v in pools.items()},
                "seconds": time.perf_counter() - start,
                "spaces": results,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
