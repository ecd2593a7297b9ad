"""benchmarks/samplers.py, the report: plots (PNG) and the markdown table from the results."""

from __future__ import annotations

import os

import jax
import numpy as np
from samplers_metric import verdict
from samplers_problems import (
    PFGMPP_VARIANTS,
    SAMPLER_NAMES,
    SIGMA_MAX,
    VARIANTS,
    data_rms,
    error_field,
    ring2d,
    sampler_call,
    with_error,
)

from jaxml.diffusion import ideal, pfgmpp


def _nfe_axis(ax, nfes):
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    ax.set_xticks(sorted(nfes))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("NFE (denoiser calls per sample)")


STYLE = {
    "euler": ("tab:gray", "o"),
    "heun": ("tab:blue", "s"),
    "stochastic": ("tab:green", "^"),
    "restart": ("tab:red", "D"),
    "restart-wide": ("tab:purple", "v"),
}


def plot_gmm(name, res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(VARIANTS), figsize=(16, 4.4), sharey=True)
    floor = res["floor"]
    for ax, variant in zip(axes, VARIANTS):
        for sampler, rows in res[variant].items():
            color, marker = STYLE[sampler]
            nfe = [r["nfe"] for r in rows]
            ax.errorbar(
                nfe,
                [r["sw2"] for r in rows],
                yerr=[r["sw2_std"] / np.sqrt(res["chunks"]) for r in rows],
                color=color,
                marker=marker,
                label=sampler,
                capsize=2,
            )
        ax.axhspan(floor["mean"] - floor["std"], floor["mean"] + floor["std"], color="k", alpha=0.1)
        ax.axhline(
            floor["mean"], color="k", ls="--", lw=1, label="noise floor (true vs true) ± 1 sd"
        )
        _nfe_axis(ax, {r["nfe"] for rows in res[variant].values() for r in rows})
        ax.set_yscale("log")
        ax.set_title(f"{name}: {variant} denoiser")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("sliced W2 to true samples (mean ± SE over chunks)")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pfgmpp(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    colors = {"64": "tab:orange", "128": "tab:red", "2048": "tab:purple", "inf": "tab:blue"}
    nfes = set()
    for label, per_D in res["by_D"].items():
        name = f"D={_label(label)}"
        for sampler, marker, ls in (("heun", "o", "-"), ("restart", "x", "--")):
            rows = per_D["exact"][sampler]
            nfes |= {r["nfe"] for r in rows}
            axes[0].plot(
                [r["nfe"] for r in rows],
                [r["sw2"] for r in rows],
                ls=ls,
                marker=marker,
                color=colors[label],
                label=f"{name} {sampler}",
            )
        for variant, ls in (("exact", "-"), ("imperfect-mid", ":")):
            rows = per_D[variant]["heun"]
            axes[1].plot(
                [r["nfe"] for r in rows],
                [r["on_data"] for r in rows],
                ls=ls,
                marker="o",
                color=colors[label],
                label=f"{name} heun, {variant}",
            )
    axes[0].axhline(res["floor"]["mean"], color="k", ls="--", lw=1, label="noise floor")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("sliced W2 to the dataset")
    axes[0].set_title("PFGM++ on a 256-point dataset (64-D), exact denoiser")
    axes[1].set_ylabel("fraction of samples on a data point")
    axes[1].set_title("PFGM++: samples that land on the data")
    for ax in axes:
        _nfe_axis(ax, nfes)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ring_scatter(gmm, path, nfe=35, n=2000):
    """What the samples look like at low NFE with the imperfect-high denoiser."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exact = ideal.gmm_denoiser(gmm["means"], gmm["stds"], gmm["weights"])
    s_d = data_rms(gmm)
    make_denoiser = with_error(exact, error_field(2, s_d), s_d)
    delta, center = VARIANTS["imperfect-high"]
    latents = pfgmpp.prior(jax.random.PRNGKey(5), (n, 2), SIGMA_MAX)
    truth = np.asarray(ideal.gmm_sample(jax.random.PRNGKey(6), n, gmm["means"], gmm["stds"]))
    names = ["heun", "stochastic", "restart-wide"]
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(14, 4.0), sharex=True, sharey=True)
    axes[0].scatter(truth[:, 0], truth[:, 1], s=1, color="k")
    axes[0].set_title("true samples")
    for ax, name in zip(axes[1:], names):
        fn, nfe_used, desc = sampler_call(name, nfe)
        x, _ = jax.jit(lambda x, k, fn=fn: fn(make_denoiser(delta, center), x, k))(
            latents, jax.random.PRNGKey(7)
        )
        x = np.asarray(x)
        ax.scatter(x[:, 0], x[:, 1], s=1, color=STYLE[name][0])
        ax.set_title(f"{name}, NFE {nfe_used}, imperfect-high")
    for ax in axes:
        ax.set_aspect("equal")
        ax.set_xlim(-3, 3)
        ax.set_ylim(-3, 3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _label(D_label):
    return "∞" if D_label == "inf" else D_label


def summary_table(results, nfes=(35, 199)) -> list:
    """The short table: SW2 / noise floor per problem, denoiser and NFE; ▲/▼ marks a
    restart cell better/worse than both heun and stochastic (paired, |t| > 3)."""
    lines = [
        "| problem · denoiser · NFE | " + " | ".join(SAMPLER_NAMES) + " |",
        "|---|" + "---|" * len(SAMPLER_NAMES),
    ]
    for name in ("ring2d", "gmm64"):
        if name not in results:
            continue
        res = results[name]
        floor = res["floor"]["mean"]
        for variant in VARIANTS:
            for nfe in nfes:
                row = {
                    s: next((r for r in res[variant].get(s, []) if r["nfe"] == nfe), None)
                    for s in SAMPLER_NAMES
                }
                if not any(row.values()):
                    continue
                best = min(r["sw2"] for r in row.values() if r)
                cells = []
                for sampler, r in row.items():
                    if r is None:
                        cells.append("—")
                        continue
                    text = f"{r['sw2'] / floor:.2f}"
                    if sampler.startswith("restart"):
                        marks = {verdict([r], res[variant][o])[nfe] for o in ("heun", "stochastic")}
                        text += " ▲" if marks == {"better"} else " ▼" if "worse" in marks else ""
                    cells.append(f"**{text}**" if r["sw2"] == best else text)
                lines.append(f"| {name} · {variant} · {nfe} | " + " | ".join(cells) + " |")
    return lines


def verdict_summary(results) -> list:
    """Lists every matched-NFE point where a Restart family is significantly better than
    both Heun and stochastic, or worse than either (paired, |t| > 3)."""
    better, worse = [], {}
    for name in ("ring2d", "gmm64"):
        if name not in results:
            continue
        for variant in VARIANTS:
            res = results[name][variant]
            for fam in ("restart", "restart-wide"):
                vs = {o: verdict(res.get(fam, []), res.get(o, [])) for o in ("heun", "stochastic")}
                for nfe in sorted(vs["heun"]):
                    where = f"{name} · {variant} · {fam} · {nfe}"
                    if vs["heun"][nfe] == "better" and vs["stochastic"].get(nfe) == "better":
                        better.append(where)
                    if any(vs[o].get(nfe) == "worse" for o in vs):
                        worse.setdefault(f"{name} · {variant}", {}).setdefault(fam, []).append(
                            str(nfe)
                        )
    total = sum(
        len(rows)
        for name in ("ring2d", "gmm64")
        if name in results
        for variant in VARIANTS
        for fam, rows in results[name][variant].items()
        if fam.startswith("restart")
    )
    return [
        f"Restart significantly better than both Heun and stochastic at equal NFE: "
        f"{len(better)} of {total} points" + (": " + "; ".join(better) if better else "") + ".",
        "",
        f"Significantly worse than at least one of them: "
        f"{sum(len(n) for fams in worse.values() for n in fams.values())} of {total}"
        + (
            " (at NFE): "
            + "; ".join(
                f"{where}: " + ", ".join(f"{fam} {'/'.join(n)}" for fam, n in fams.items())
                for where, fams in worse.items()
            )
            if worse
            else ""
        )
        + ".",
        "",
    ]


def table_markdown(results) -> str:
    lines = [
        "Sampler error with exact denoisers (no network), CPU: sliced W2 to fresh true "
        "samples divided by the metric's noise floor (SW2 between two independent true "
        "sample sets), so 1.00 is as good as it gets. Bold: best at that NFE. ▲ / ▼: "
        "Restart significantly better than both Heun and EDM-stochastic / worse than one "
        "of them (paired over chunks, |t| > 3). `python benchmarks/samplers.py`.",
        "",
    ]
    lines += summary_table(results)
    lines.append("")
    lines += verdict_summary(results)
    if "pfgmpp" in results:
        res = results["pfgmpp"]
        floor = res["floor"]["mean"]
        nfes = [r["nfe"] for r in next(iter(res["by_D"].values()))["exact"]["heun"]]
        lines.append(
            "PFGM++ on a 256-point dataset in 64-D, exact denoiser: SW2 / floor "
            "(fraction of samples on a data point):"
        )
        lines.append("")
        lines.append("| D · sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |")
        lines.append("|---|" + "---|" * len(nfes))
        for label, per_D in res["by_D"].items():
            for sampler in ("heun", "restart"):
                cells = {r["nfe"]: r for r in per_D["exact"][sampler]}
                lines.append(
                    f"| {_label(label)} · {sampler} | "
                    + " | ".join(
                        f"{cells[n]['sw2'] / floor:.2f} ({cells[n]['on_data']:.1%})"
                        if n in cells
                        else "—"
                        for n in nfes
                    )
                    + " |"
                )
        lines.append("")

    lines += [
        "## Full results",
        "",
        "Absolute SW2 (mean over chunks). Floors: "
        + ", ".join(
            f"{name} {results[name]['floor']['mean']:.4f} ± {results[name]['floor']['std']:.4f}"
            for name in ("ring2d", "gmm64", "pfgmpp")
            if name in results
        )
        + ".",
        "",
    ]
    for name in ("ring2d", "gmm64"):
        if name not in results:
            continue
        res = results[name]
        for variant in VARIANTS:
            nfes = sorted({r["nfe"] for rows in res[variant].values() for r in rows})
            lines.append(f"**{name}, {variant} denoiser**")
            lines.append("")
            lines.append("| sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |")
            lines.append("|---|" + "---|" * len(nfes))
            for sampler, rows in res[variant].items():
                cells = {r["nfe"]: r for r in rows}
                lines.append(
                    f"| {sampler} | "
                    + " | ".join(
                        f"{cells[n]['sw2']:.4f} ({cells[n]['config']})" if n in cells else "—"
                        for n in nfes
                    )
                    + " |"
                )
            lines.append("")
    if "pfgmpp" in results:
        res = results["pfgmpp"]
        for variant in PFGMPP_VARIANTS:
            nfes = [r["nfe"] for r in next(iter(res["by_D"].values()))[variant]["heun"]]
            lines.append(f"**PFGM++, {variant} denoiser: heun / restart, SW2 (fraction on data)**")
            lines.append("")
            lines.append("| D | " + " | ".join(f"NFE {n}" for n in nfes) + " |")
            lines.append("|---|" + "---|" * len(nfes))
            for label, per_D in res["by_D"].items():
                h = {r["nfe"]: r for r in per_D[variant]["heun"]}
                rs = {r["nfe"]: r for r in per_D[variant]["restart"]}
                fmt = lambda r: f"{r['sw2']:.4f} ({r['on_data']:.3f})"
                lines.append(
                    f"| {_label(label)} | "
                    + " | ".join(fmt(h[n]) + (" / " + fmt(rs[n]) if n in rs else "") for n in nfes)
                    + " |"
                )
            lines.append("")
    lines.append(
        "**Restart vs Heun / stochastic at equal NFE** (paired over chunks, |t| > 3; "
        "'tie' = not resolved):"
    )
    lines.append("")
    for name in ("ring2d", "gmm64"):
        if name not in results:
            continue
        for variant in VARIANTS:
            res = results[name][variant]
            for fam in ("restart", "restart-wide"):
                for other in ("heun", "stochastic"):
                    v = verdict(res.get(fam, []), res.get(other, []))
                    summary = ", ".join(f"{n}: {s}" for n, s in sorted(v.items()))
                    lines.append(f"- {name} / {variant}: {fam} vs {other} — {summary}")
    if "pfgmpp" in results:
        for variant in PFGMPP_VARIANTS:
            for label, per_D in results["pfgmpp"]["by_D"].items():
                v = verdict(per_D[variant]["restart"], per_D[variant]["heun"])
                summary = ", ".join(f"{n}: {s}" for n, s in sorted(v.items()))
                lines.append(f"- pfgmpp D={_label(label)} / {variant}: restart vs heun — {summary}")
    lines.append("")
    return "\n".join(lines)


# The cut main grid (results["cutgrid"]).

CUT_MARK = {"better": "▲", "worse": "▼", "tie": "·"}


def _cut_series(per_variant) -> list:
    """heun, stochastic, then the restart series in run order ("restart N_main=6", ...)."""
    return ["heun", "stochastic"] + [s for s in per_variant if s not in ("heun", "stochastic")]


def _cut_verdicts(per_variant, series):
    """{nfe: (vs heun, vs stochastic)} for one restart series."""
    vs = {o: verdict(per_variant[series], per_variant[o]) for o in ("heun", "stochastic")}
    return {n: (vs["heun"].get(n), vs["stochastic"].get(n)) for n in vs["heun"]}


def cut_grid_markdown(cut) -> str:
    settings = cut["settings"]
    lines = [
        "## Cut main grid: Restart on a coarse main pass vs Heun / stochastic at equal NFE",
        "",
        f"Restart on edm_sigmas(N_main), N_main ∈ {settings['main_steps']}, with K ∈ "
        f"{settings['restarts']} restarts of its interval (K = 0 is Heun on the cut grid); "
        "heun and stochastic run N = (NFE + 1) / 2 steps, the same NFE. SW2 / noise floor, "
        f"mean over {settings['chunks']} chunks; bold: best in the row. Marks after a "
        "restart cell: vs heun, then vs stochastic, paired over chunks (|t| > 3): ▲ better, "
        "▼ worse, · not resolved. Denoisers: exact; imperfect-high (σ_e = 5 s_d) and "
        "imperfect-2sd (σ_e = 2 s_d), error bumps above both restart intervals.",
        "",
    ]
    first = next(iter(cut["problems"].values()))
    series = _cut_series(first[next(iter(settings["variants"]))])
    lines.append("| problem · denoiser · NFE | " + " | ".join(series) + " |")
    lines.append("|---|" + "---|" * len(series))
    counts = {}
    for name, res in cut["problems"].items():
        floor = res["floor"]["mean"]
        for variant in settings["variants"]:
            per = res[variant]
            marks = {s: _cut_verdicts(per, s) for s in series[2:]}
            for nfe in sorted({r["nfe"] for rows in per.values() for r in rows}):
                row = {s: next((r for r in per[s] if r["nfe"] == nfe), None) for s in series}
                best = min(r["sw2"] for r in row.values() if r)
                cells = []
                for s, r in row.items():
                    if r is None:
                        cells.append("—")
                        continue
                    text = f"{r['sw2'] / floor:.2f}"
                    if "K" in r:
                        text += f" (K={r['K']})"
                        if r["K"] > 0:
                            vh, vs = marks[s][nfe]
                            text += f" {CUT_MARK[vh]}{CUT_MARK[vs]}"
                            c = counts.setdefault((s.split()[0], variant), [])
                            c.append((vh, vs))
                    cells.append(f"**{text}**" if r["sw2"] == best else text)
                lines.append(f"| {name} · {variant} · {nfe} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Verdict counts over the K ≥ 1 points (both problems, every N_main): better / tie / worse.",
        "",
        "| family · denoiser | vs heun | vs stochastic | better than both |",
        "|---|---|---|---|",
    ]
    for (fam, variant), c in counts.items():
        tally = [
            "/".join(str(sum(v[i] == w for v in c)) for w in ("better", "tie", "worse"))
            for i in (0, 1)
        ]
        both = sum(v == ("better", "better") for v in c)
        lines.append(f"| {fam} · {variant} | {tally[0]} | {tally[1]} | {both} of {len(c)} |")
    floors = ", ".join(
        f"{name} {res['floor']['mean']:.4f} ± {res['floor']['std']:.4f} "
        f"({res['chunks']}x{res['n_per_chunk']} samples)"
        for name, res in cut["problems"].items()
    )
    lines += ["", f"Floors: {floors}. Section run time {cut['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def plot_cut_grid(cut, path):
    import matplotlib
    from matplotlib.ticker import FuncFormatter

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(cut["settings"]["variants"])
    problems = list(cut["problems"])
    fig, axes = plt.subplots(
        len(problems),
        len(variants),
        figsize=(5.2 * len(variants), 4.2 * len(problems)),
        squeeze=False,
    )
    dashes = ["-", "--", ":", "-."]
    for row, name in zip(axes, problems):
        res = cut["problems"][name]
        floor = res["floor"]["mean"]
        for ax, variant in zip(row, variants):
            per = res[variant]
            nfes = set()
            for i, s in enumerate(_cut_series(per)):
                fam = s.split()[0]
                color, marker = STYLE[fam]
                rows = sorted(per[s], key=lambda r: r["nfe"])
                nfes |= {r["nfe"] for r in rows}
                ax.errorbar(
                    [r["nfe"] for r in rows],
                    [r["sw2"] / floor for r in rows],
                    yerr=[r["sw2_std"] / floor / np.sqrt(res["chunks"]) for r in rows],
                    color=color,
                    marker=marker,
                    ls="-" if i < 2 else dashes[(i - 2) % len(cut["settings"]["main_steps"])],
                    ms=4,
                    capsize=2,
                    label=s if i < 2 else s.replace(" ", " (cut grid) "),
                )
            ax.axhline(1.0, color="k", ls="--", lw=1, label="noise floor")
            ticks = []
            for n in sorted(nfes):  # label NFEs at least 13% apart
                if not ticks or n >= 1.13 * ticks[-1]:
                    ticks.append(n)
            _nfe_axis(ax, ticks)
            ax.set_yscale("log")
            for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
                axis(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.set_title(f"{name}: {variant} denoiser")
            ax.grid(True, which="both", alpha=0.3)
        row[0].set_ylabel("SW2 / noise floor (mean ± SE over chunks)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results, out_dir, suffix) -> str:
    """Plots and the markdown table; returns the table."""
    for name in ("ring2d", "gmm64"):
        if name in results:
            plot_gmm(name, results[name], os.path.join(out_dir, f"samplers_{name}{suffix}.png"))
    if "ring2d" in results:
        plot_ring_scatter(ring2d(), os.path.join(out_dir, f"samplers_ring2d_scatter{suffix}.png"))
    if "pfgmpp" in results:
        plot_pfgmpp(results["pfgmpp"], os.path.join(out_dir, f"samplers_pfgmpp{suffix}.png"))
    main = any(name in results for name in ("ring2d", "gmm64", "pfgmpp"))
    table = table_markdown(results) if main else ""
    if "cutgrid" in results:
        plot_cut_grid(results["cutgrid"], os.path.join(out_dir, f"samplers_cutgrid{suffix}.png"))
        table += ("\n" if main else "") + cut_grid_markdown(results["cutgrid"])
    with open(os.path.join(out_dir, f"samplers_table{suffix}.md"), "w") as f:
        f.write(table)
    return table
