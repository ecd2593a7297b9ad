"""The recipe sweep over training seeds, from benchmarks/results/diffusion_recipe_cpu.json
(issue 22 item 1).

  python benchmarks/diffusion_recipe_report.py

The JSON is written by benchmarks/diffusion_digits.py (`--out diffusion_recipe`; commands in
README.md): each run is one training run of the main job with one or two changes from the
baseline (the defaults when the sweep started), scored at its last step with the default
Restart on 2,048 images × 3 latent seeds. A recipe's number is the mean ± s.e. over its
training seeds; its difference to the baseline is paired by training seed (same
initialisation and data order) and by latent seed. One training seed cannot decide
a recipe: the spread between training seeds is larger than the latent-seed noise.

Writes diffusion_recipe_cpu.md and diffusion_recipe_seeds_cpu.png next to the JSON.
"""

import json
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # diffusion_digits next to this file
from diffusion_digits import mean_se  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SOURCE = RESULTS / "diffusion_recipe_cpu.json"
SETTING = "restart N=18 K=2"
BASELINE = "dropout 0.1, constant lr"

# The flags are explicit so that the commands reproduce the runs whatever the config's
# defaults are (dropout 0.1 and a constant lr were the defaults when the sweep started).
_OLD = "--config.model.dropout=0.1 --config.optimizer.decay=constant"
_FLAGS = {
    BASELINE: _OLD,
    "no clipping": _OLD + " --config.optimizer.grad_clip=0",
    "cosine decay": "--config.model.dropout=0.1 --config.optimizer.decay=cosine",
    "dropout 0": "--config.model.dropout=0 --config.optimizer.decay=constant",
    "dropout 0 + cosine": "--config.model.dropout=0 --config.optimizer.decay=cosine",
}
_WORKDIRS = {
    BASELINE: ["runs/d128", "runs/d128_s1", "runs/d128_s2"],
    "no clipping": ["runs/noclip"],
    "cosine decay": ["runs/cosine", "runs/cosine_s1", "runs/cosine_s2"],
    "dropout 0": ["runs/nodrop", "runs/nodrop_s1", "runs/nodrop_s2"],
    "dropout 0 + cosine": ["runs/cosnodrop_s0", "runs/cosnodrop_s1", "runs/cosnodrop_s2"],
}
# workdir -> (recipe, training seed, the command-line overrides that made it)
RUNS = {
    w: (recipe, seed, (f"--config.seed={seed} " if seed else "") + _FLAGS[recipe])
    for recipe, workdirs in _WORKDIRS.items()
    for seed, w in enumerate(workdirs)
}
# Extra paired comparisons (recipe, against) printed under the table.
PAIRED = [("dropout 0 + cosine", "dropout 0"), ("dropout 0 + cosine", "cosine decay")]


def fmt(mean: float, se: float, signed: bool = False) -> str:
    m = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    return m if np.isnan(se) else f"{m} ± {se:.2f}"


def by_recipe(results: dict) -> dict[str, dict[int, dict]]:
    """recipe -> training seed -> {fd, precision, floor, evals (step -> FD)}."""
    recipes: dict[str, dict[int, dict]] = {}
    for run in results["runs"]:
        if run["workdir"] not in RUNS:
            continue
        recipe, seed, _ = RUNS[run["workdir"]]
        row = next(r for r in run["samplers"] if r["setting"] == SETTING and not r["weight_bits"])
        recipes.setdefault(recipe, {})[seed] = dict(
            fd=row["fd_train"],
            precision=row["precision"],
            floor=row["fd_train_floor"],
            evals={e["step"]: e["fd_digits"] for e in run["fd_vs_training_step"]},
        )
    return recipes


def paired(recipes: dict[str, dict[int, dict]], recipe: str, against: str) -> str:
    """Mean ± s.e. of recipe − against over the training seeds both have, and their count."""
    shared = sorted(set(recipes[recipe]) & set(recipes[against]))
    d = mean_se([recipes[recipe][s]["fd"] - recipes[against][s]["fd"] for s in shared])
    return f"{fmt(*d, signed=True)} (n={len(shared)})"


def table(recipes: dict[str, dict[int, dict]]) -> list[str]:
    steps = sorted(next(iter(recipes[BASELINE].values()))["evals"])
    floor = next(iter(recipes[BASELINE].values()))["floor"]
    lines = [
        f"FD-digits vs train at step {max(steps)} (floor at this N: {floor:.2f}); per training "
        "seed, then mean ± s.e. over training seeds; Δ = recipe − baseline, paired by training "
        "seed (each a mean over the same 3 latent seeds). Training evals: N = 512, one latent "
        "seed, mean over training seeds.",
        "",
        "| recipe | training seeds | FD per training seed | FD | Δ vs baseline | precision | "
        "training evals at " + "/".join(map(str, steps)) + " |",
        "|---|---|---|---|---|---|---|",
    ]
    for recipe, seeds in recipes.items():
        order = sorted(seeds)
        fd = mean_se([seeds[s]["fd"] for s in order])
        shares_seeds = set(seeds) & set(recipes[BASELINE])
        delta = "—" if recipe == BASELINE or not shares_seeds else paired(recipes, recipe, BASELINE)
        evals = [np.mean([seeds[s]["evals"][t] for s in order]) for t in steps]
        lines.append(
            f"| {recipe} | {len(order)} | "
            + ", ".join(f"{seeds[s]['fd']:.2f}" for s in order)
            + f" | {fmt(*fd)} | {delta} | {np.mean([seeds[s]['precision'] for s in order]):.3f}"
            f" | {', '.join(f'{e:.2f}' for e in evals)} |"
        )
    lines.append("")
    for recipe, against in PAIRED:
        if recipe in recipes and against in recipes:
            lines.append(f"- {recipe} − {against}, paired: {paired(recipes, recipe, against)}")
    return lines


def plot(recipes: dict[str, dict[int, dict]], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    names = list(recipes)
    for i, recipe in enumerate(names):
        seeds = recipes[recipe]
        for seed, run in sorted(seeds.items()):
            axes[0].scatter(i + 0.08 * (seed - 1), run["fd"], color=f"C{seed}", s=25,
                            label=f"training seed {seed}" if i == 0 else None)  # fmt: skip
        m, se = mean_se([run["fd"] for run in seeds.values()])
        axes[0].errorbar(i + 0.3, m, yerr=0 if np.isnan(se) else se, fmt="k_", capsize=4)
        steps = sorted(next(iter(seeds.values()))["evals"])
        curve = [np.mean([run["evals"][t] for run in seeds.values()]) for t in steps]
        axes[1].plot(steps, curve, marker="o", label=f"{recipe} ({len(seeds)} seeds)")
    floor = next(iter(recipes[BASELINE].values()))["floor"]
    axes[0].axhline(floor, color="gray", ls="--", label="real digits (same N)")
    axes[0].set_xticks(
        range(len(names)), [n.replace(", ", "\n").replace(" + ", "\n+ ") for n in names]
    )
    axes[0].set(ylabel="FD-digits, N = 2,048, mean of 3 latent seeds",
                title="last step, per training seed (bar: mean ± s.e.)")  # fmt: skip
    axes[1].set(xlabel="training step", ylabel="FD-digits, N = 512 (training eval)",
                title="training evals, mean over training seeds")  # fmt: skip
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    results = json.loads(SOURCE.read_text())
    recipes = by_recipe(results)
    commands = [
        f"python -m train.diffusion --workdir={w} {o}".rstrip() for w, (_, _, o) in RUNS.items()
    ]
    text = "\n".join(
        [
            "# Recipe sweep over training seeds (the main job, one or two changes per row)",
            "",
            f"`python benchmarks/diffusion_recipe_report.py` from `{SOURCE.name}` "
            f"(scored with `{SETTING}`, N = {results['num_samples']} per latent seed, "
            f"seeds {results['seeds']}). Training runs:",
            "",
            *[f"    {c}" for c in commands],
            "",
            *table(recipes),
            "",
        ]
    )
    (RESULTS / "diffusion_recipe_cpu.md").write_text(text)
    plot(recipes, RESULTS / "diffusion_recipe_seeds_cpu.png")
    print(text)


if __name__ == "__main__":
    main()
