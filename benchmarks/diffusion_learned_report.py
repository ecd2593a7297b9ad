"""Tables and figures from benchmarks/results/diffusion_learned_cpu.json (issue 22 items 3-4).

  python benchmarks/diffusion_learned_report.py

The JSON is written by benchmarks/diffusion_digits.py (`--out diffusion_learned`; the
commands are listed in README.md). Two questions, each with its own figure and table:

- Restart on learned models (Xu et al. 2023): FD-digits vs NFE of Heun, EDM-stochastic and
  Restart on the D = 128 and EDM checkpoints at two training steps, and the paired difference
  Restart − Heun / Restart − stochastic at equal NFE (same latent seeds: per-seed
  differences, mean ± s.e.).
- PFGM++'s D (Xu et al. 2023): FD-digits per D at each NFE, and the rise of FD when the
  weights are quantised (robustness to model error).

Writes diffusion_learned_{restart,dims}_cpu.png and diffusion_learned_cpu.md next to the JSON.
"""

import json
from pathlib import Path

import matplotlib
import matplotlib.ticker
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SOURCE = RESULTS / "diffusion_learned_cpu.json"


def d_name(D) -> str:
    return "∞ (EDM)" if D is None else str(D)


def rows_of(run: dict, bits: int = 0) -> dict[str, dict]:
    return {r["setting"]: r for r in run["samplers"] if r.get("weight_bits", 0) == bits}


def paired(a: dict, b: dict) -> tuple[float, float]:
    """Mean ± s.e. over seeds of FD(a) − FD(b) (same latent seeds)."""
    diff = np.subtract(a["fd_train_per_seed"], b["fd_train_per_seed"])
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))


def fmt(row: dict) -> str:
    return f"{row['fd_train']:.2f} ± {row['fd_train_se']:.2f}"


# Restart vs the baselines at equal NFE: (restart setting, [baselines at its NFE])
COMPARISONS = [
    ("restart official cifar10 (NFE 43)", ["heun N=22", "stochastic N=22", "heun N=18"]),
    ("restart N=18 K=2", ["heun N=22", "stochastic N=22", "heun N=18"]),
    ("restart N=18 K=10", ["heun N=38"]),
    ("restart official imagenet (NFE 203)", ["heun N=22", "restart official cifar10 (NFE 43)"]),
]


def restart_section(runs: list[dict]) -> list[str]:
    lines = [
        "## Restart vs Heun / EDM-stochastic on learned digits models",
        "",
        "FD-digits against train (lower is better; floor = two real sets of the same N); "
        "Δ = FD(Restart) − FD(baseline), paired over latent seeds (mean ± s.e.); "
        "negative: Restart better.",
        "",
        "| model | step | Restart setting | NFE | FD | baseline | NFE | FD | Δ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        rows = rows_of(run)
        for restart, baselines in COMPARISONS:
            if restart not in rows:
                continue
            for base in baselines:
                if base not in rows:
                    continue
                delta, se = paired(rows[restart], rows[base])
                mark = " (>2 s.e.)" if abs(delta) > 2 * se else ""
                lines.append(
                    f"| D={d_name(run['D'])} | {run['step']} | {restart} | {rows[restart]['nfe']} "
                    f"| {fmt(rows[restart])} | {base} | {rows[base]['nfe']} | {fmt(rows[base])} "
                    f"| {delta:+.2f} ± {se:.2f}{mark} |"
                )
    return lines + [""]


def dims_section(runs: list[dict]) -> list[str]:
    settings = ["heun N=5", "heun N=10", "heun N=18", "restart official cifar10 (NFE 43)"]
    lines = [
        "## PFGM++ D on learned digits models (same recipe and budget)",
        "",
        "FD-digits (mean ± s.e. over latent seeds; one training run per D) per sampler; the "
        "b-bit columns quantise every weight tensor to b bits (Heun N=18, NFE 35).",
        "",
        "| D | " + " | ".join(settings) + " | 5-bit | 4-bit |",
        "|---|" + "---|" * (len(settings) + 2),
    ]
    for run in runs:
        rows = rows_of(run)
        cells = [fmt(rows[s]) if s in rows else "–" for s in settings]
        for bits in (5, 4):
            q = rows_of(run, bits).get("heun N=18")
            cells.append(fmt(q) if q else "–")
        lines.append(f"| {d_name(run['D'])} | " + " | ".join(cells) + " |")
    return lines + [""]


def plot_restart(runs: list[dict], path: Path) -> None:
    steps = sorted({r["step"] for r in runs})
    fig, axes = plt.subplots(1, len(steps), figsize=(6 * len(steps), 4.5), squeeze=False)
    for ax, step in zip(axes[0], steps):
        for run in (r for r in runs if r["step"] == step):
            for sampler, marker in (("heun", "o"), ("stochastic", "s"), ("restart", "^")):
                pts = sorted(
                    (r["nfe"], r["fd_train"], r["fd_train_se"])
                    for r in rows_of(run).values()
                    if r["sampler"] == sampler and r["nfe"] >= 35
                )
                if pts:
                    x, y, err = zip(*pts)
                    ax.errorbar(
                        x, y, yerr=err, marker=marker, capsize=2,
                        label=f"D={d_name(run['D'])} {sampler}",
                    )  # fmt: skip
        floor = next(iter(rows_of(runs[0]).values()))["fd_train_floor"]
        ax.axhline(floor, color="gray", ls="--", label="real digits (same N)")
        nfes = [r["nfe"] for run in runs if run["step"] == step for r in rows_of(run).values()]
        ax.set(xlabel="NFE", ylabel="FD-digits", title=f"checkpoint step {step}")
        if max(nfes) > 3 * min(n for n in nfes if n >= 35):
            ax.set_xscale("log")
        ticks = sorted({n for n in nfes if n >= 35})
        ax.set_xticks(ticks, [str(n) for n in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())  # y keeps its log labels
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_dims(runs: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    bits_seen = set()
    for run in runs:
        heun = sorted(
            (r["nfe"], r["fd_train"], r["fd_train_se"])
            for r in rows_of(run).values()
            if r["sampler"] == "heun"
        )
        if heun:
            x, y, err = zip(*heun)
            axes[0].errorbar(x, y, yerr=err, marker="o", capsize=2, label=f"D={d_name(run['D'])}")
        quant = [
            (bits or 32, r["fd_train"], r["fd_train_se"])
            for bits in (0, 6, 5, 4)
            for r in [rows_of(run, bits).get("heun N=18")]
            if r
        ]
        if len(quant) > 1:
            bits_seen.update(b for b, _, _ in quant)
            x, y, err = zip(*sorted(quant))
            axes[1].errorbar(x, y, yerr=err, marker="o", capsize=2, label=f"D={d_name(run['D'])}")
    floor = next(iter(rows_of(runs[0]).values()))["fd_train_floor"]
    for ax in axes:
        ax.axhline(floor, color="gray", ls="--", label="real digits (same N)")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    axes[0].set(xlabel="NFE (Heun)", ylabel="FD-digits", title="fewer steps")
    axes[1].set(
        xscale="log", xlabel="weight bits (32: float)", ylabel="FD-digits (Heun N=18)",
        title="quantised weights",
    )  # fmt: skip
    ticks = sorted(bits_seen)
    axes[1].set_xticks(ticks, [str(b) if b < 32 else "float" for b in ticks])
    axes[1].xaxis.set_minor_locator(matplotlib.ticker.NullLocator())  # y keeps its log labels
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    results = json.loads(SOURCE.read_text())
    runs = sorted(results["runs"], key=lambda r: (r["step"], r["D"] is None, r["D"] or 0))
    last = [r for r in runs if r["step"] == max(x["step"] for x in runs)]
    restart_runs = [r for r in runs if any("restart" in s for s in rows_of(r))]
    header = [
        "# Samplers and PFGM++ D on learned digits models",
        "",
        f"`python benchmarks/diffusion_learned_report.py` from `{SOURCE.name}`; "
        f"N = {results['num_samples']} samples per seed, seeds {results['seeds']}; "
        "the commands that made the JSON are in README.md.",
        "",
    ]
    text = "\n".join(header + restart_section(restart_runs) + dims_section(last))
    (RESULTS / "diffusion_learned_cpu.md").write_text(text)
    plot_restart(restart_runs, RESULTS / "diffusion_learned_restart_cpu.png")
    plot_dims(last, RESULTS / "diffusion_learned_dims_cpu.png")
    print(text)


if __name__ == "__main__":
    main()
