"""Timing of `linear_recurrence` implementations and of one S5 layer.

    python benchmarks/scan.py             # L in {1k, 4k, 16k} (GPU: up to 64k), batch 8, P 256
    python benchmarks/scan.py --lengths 4096,65536 --impls associative pallas
    python benchmarks/scan.py --quick --include-interpret   # CPU smoke run, Pallas interpreted
    python benchmarks/scan.py --replot benchmarks/results/scan_cpu.json   # stats + PNG only

For every length, implementation and mode (forward; forward + backward) the
jitted function is compiled once, then all cases are timed round-robin
`--repeats` times, so that load from other processes hits every case alike.
We report medians (and minima, which load from other work disturbs least) and
ratios against "associative" (the algorithm of the official S5 code) measured
in the same run. Writes benchmarks/results/scan_<backend>.json and .png (smoke
runs: scan_<backend>_quick[_interpret].json, or --out); the fastest
forward+backward implementation per backend is what
`linear_recurrence(impl="auto")` uses.

Implementations: "associative", "sequential", "chunked", and "pallas" (the
Pallas kernel of pallas_kernels.linear_scan) where it compiles, on GPU and TPU.
On CPU Pallas only runs interpreted, which says nothing about speed; it is
included there only with --include-interpret, for a smoke run.

Bandwidth (recurrence case): the minimal bytes any implementation must move,
divided by the median time. Forward: read b, write h (2 arrays of batch x L x P
complex64) plus Λ̄ once. Forward + backward: those, and the backward's read of
the cotangent of h, write of the gradient w.r.t. b and read of the saved h for
the gradient w.r.t. Λ̄ (5 arrays). Reported as GB/s and as a fraction of
--peak-gbps (defaults by device kind: H100 3350, H200 4800 GB/s; none
otherwise).

Correctness before timing: once compiled, before the timed repeats, every
implementation's recurrence forward and gradients (w.r.t. Λ̄ and b) are compared
with a NumPy loop in complex128 at every length. An implementation off by more than
--max-rel-error (relative to the reference's largest magnitude) stops the run
with exit 1 and writes nothing: a fast wrong kernel never gets a timing. The
errors are stored in the JSON ("max_rel_error" per implementation and length).

Cases:
  recurrence  h_t = Λ̄ h_{t-1} + b_t with one Λ̄ (P,) for all steps and b
              (batch, L, P) complex64: the S5 scan alone. Backward: gradients
              w.r.t. Λ̄ and b of a real loss.
  s5_layer    one S5Layer (BatchNorm prenorm, S5SSM, half_glu1, residual) with
              H = 128 features and a stored state of P complex numbers
              (state_size = 2P with conj_sym), input (batch, L, H). Backward:
              gradients w.r.t. all parameters and the input.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxml.auto_impl import fastest_correct
from jaxml.models.s5 import S5Layer
from jaxml.ssm import linear_recurrence
from jaxml.ssm.recurrence import resolve_impl

IMPLS = ("associative", "sequential", "chunked", "pallas")
RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_LENGTHS = {"gpu": (1024, 4096, 16384, 65536)}  # other backends: below
DEFAULT_LENGTHS_OTHER = (1024, 4096, 16384)
# HBM bandwidth in GB/s by a substring of jax's device_kind.
PEAK_GBPS = {"H200": 4800.0, "H100": 3350.0}
COMPLEX64_BYTES = 8
# The loss in recurrence_fns is sum(Re h) + LOSS_IMAG_WEIGHT * sum(Im h).
LOSS_IMAG_WEIGHT = 0.5
# Measured on CPU (complex64, |Λ̄| = 0.999, batch 8, P 256, L up to 64k): every impl within
# 4e-5 (grad_b of sequential accumulation is the largest); one step off is ~3e-2.
DEFAULT_MAX_REL_ERROR = 1e-3


def default_impls(backend: str, include_interpret: bool) -> list[str]:
    """All implementations; "pallas" only where it compiles (GPU, TPU) or on request."""
    if backend in ("gpu", "tpu") or include_interpret:
        return list(IMPLS)
    return [i for i in IMPLS if i != "pallas"]


def default_peak_gbps(device_kind: str) -> float | None:
    for key, gbps in PEAK_GBPS.items():
        if key in device_kind:
            return gbps
    return None


def min_bytes(case: str, mode: str, batch: int, length: int, P: int) -> int | None:
    """Bytes the recurrence must move at least (see the module docstring); None for a layer."""
    if case != "recurrence":
        return None
    arrays = {"fwd": 2, "fwd_bwd": 5}[mode]
    lambda_bytes = {"fwd": 1, "fwd_bwd": 2}[mode] * P * COMPLEX64_BYTES  # read; + its gradient
    return arrays * batch * length * P * COMPLEX64_BYTES + lambda_bytes


def parse_lengths(text: str) -> list[int]:
    try:
        lengths = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--lengths takes a comma list of ints, got {text!r}"
        ) from None
    if not lengths or min(lengths) < 1:
        raise argparse.ArgumentTypeError(f"--lengths needs positive lengths, got {text!r}")
    return lengths


@functools.lru_cache  # the correctness check and the timing share the compiled functions
def recurrence_fns(impl: str, chunk_size: int):
    def fwd(a, b):
        return linear_recurrence(a, b, axis=1, impl=impl, chunk_size=chunk_size)

    def loss(a, b):
        h = fwd(a, b)
        return jnp.sum(h.real) + LOSS_IMAG_WEIGHT * jnp.sum(h.imag)

    return jax.jit(fwd), jax.jit(jax.grad(loss, argnums=(0, 1)))


def recurrence_inputs(batch: int, length: int, P: int):
    rng = np.random.default_rng(0)
    a = 0.999 * np.exp(1j * rng.uniform(-np.pi, np.pi, P))
    b = rng.normal(size=(batch, length, P)) + 1j * rng.normal(size=(batch, length, P))
    return jnp.asarray(a, jnp.complex64), jnp.asarray(b, jnp.complex64)


def numpy_recurrence_and_grads(a: np.ndarray, b: np.ndarray):
    """h, d loss/dΛ̄ and d loss/db for recurrence_fns' loss, by loops in complex128.

    jax.grad of a real loss of a holomorphic map returns the plain transpose applied to
    the cotangent dL/dRe h - i dL/dIm h: the backward loop uses Λ̄, not its conjugate.
    """
    a, b = a.astype(np.complex128), b.astype(np.complex128)
    h = np.empty_like(b)
    carry = np.zeros_like(b[:, 0])
    for t in range(b.shape[1]):
        carry = a * carry + b[:, t]
        h[:, t] = carry
    cotangent = 1 - 1j * LOSS_IMAG_WEIGHT
    grad_b = np.empty_like(b)
    carry = np.zeros_like(b[:, 0])
    for t in reversed(range(b.shape[1])):
        carry = cotangent + a * carry
        grad_b[:, t] = carry
    grad_a = np.sum(grad_b[:, 1:] * h[:, :-1], axis=(0, 1))
    return h, grad_a, grad_b


def rel_error(x, ref: np.ndarray) -> float:
    """Largest error relative to the reference's largest magnitude (absolute if that is 0)."""
    err, scale = np.max(np.abs(np.asarray(x) - ref)), np.max(np.abs(ref))
    return float(err / scale if scale > 0 else err)


def check_recurrence(impls, lengths, batch: int, P: int, chunk_size: int, max_rel_error: float):
    """{impl: {length: {"h", "grad_a", "grad_b"}}} relative errors vs NumPy; raises if too big."""
    errors, failures = {}, []
    for length in lengths:
        a, b = recurrence_inputs(batch, length, P)
        ref = numpy_recurrence_and_grads(np.asarray(a), np.asarray(b))
        for impl in impls:
            fwd, grad = recurrence_fns(impl, chunk_size)
            got = (fwd(a, b), *grad(a, b))
            err = {k: rel_error(x, r) for k, x, r in zip(("h", "grad_a", "grad_b"), got, ref)}
            errors.setdefault(impl, {})[length] = err
            worst = float(np.max(list(err.values())))  # NaN if any is NaN
            print(f"checked  {impl:11s} L={length:6d} max rel. error {worst:.1e}", flush=True)
            if not worst <= max_rel_error:  # also catches NaN
                failures.append(f"{impl} at L={length}: {err}")
    if failures:
        raise ValueError(
            f"recurrence results differ from the NumPy reference by more than "
            f"{max_rel_error:g} (relative): " + "; ".join(failures)
        )
    return errors


def layer_fns(impl: str, H: int, P: int, batch: int, length: int):
    layer = S5Layer(state_size=2 * P, blocks=8, scan_impl=impl)
    x = jax.random.normal(jax.random.key(1), (batch, length, H))
    variables = layer.init(jax.random.key(0), x[:, :16])  # parameters do not depend on L

    def fwd(variables, x):
        return layer.apply(variables, x)

    def loss(params, x):
        return jnp.sum(layer.apply({**variables, "params": params}, x) ** 2)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    return jax.jit(fwd), (lambda variables, x: grad(variables["params"], x)), (variables, x)


def timed(fn, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info() -> dict:
    dev = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": getattr(jax.lib, "__version__", None) or jax.__version__,
        "auto_impl": resolve_impl("auto"),
        # Other work shares the machine: the load average says how much.
        "load_average_1_5_15min": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def run(args) -> dict:
    load_at_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    cases = []  # (name, impl, L, mode, fn, args)
    compile_s = {}
    for length in args.lengths:
        a, b = recurrence_inputs(args.batch, length, args.P)
        for impl in args.impls:
            f, g = recurrence_fns(impl, args.chunk_size)
            cases.append(("recurrence", impl, length, "fwd", f, (a, b)))
            cases.append(("recurrence", impl, length, "fwd_bwd", g, (a, b)))
        if not args.no_layer:
            for impl in args.impls:
                f, g, (variables, x) = layer_fns(impl, args.H, args.P, args.batch, length)
                cases.append(("s5_layer", impl, length, "fwd", f, (variables, x)))
                cases.append(("s5_layer", impl, length, "fwd_bwd", g, (variables, x)))

    for name, impl, length, mode, fn, fn_args in cases:
        seconds = timed(fn, *fn_args)  # compile + first run
        compile_s[(name, impl, length, mode)] = seconds
        print(f"compiled {name:10s} {impl:11s} L={length:6d} {mode:7s} {seconds:7.2f}s", flush=True)

    # After the compile timings (the check reuses the compiled functions), before any repeat.
    errors = check_recurrence(
        args.impls, args.lengths, args.batch, args.P, args.chunk_size, args.max_rel_error
    )
    times = {key: [] for key in compile_s}
    for rep in range(args.repeats):
        # Round-robin over lengths too, so slow drifts in machine load spread evenly.
        for name, impl, length, mode, fn, fn_args in cases:
            times[(name, impl, length, mode)].append(timed(fn, *fn_args))
        print(f"repeat {rep + 1}/{args.repeats} done", flush=True)

    raw = [
        {
            "case": name,
            "impl": impl,
            "length": length,
            "mode": mode,
            "times_s": ts,
            "compile_and_first_run_s": compile_s[(name, impl, length, mode)],
            "min_bytes": min_bytes(name, mode, args.batch, length, args.P),
            "max_rel_error": errors[impl][length] if name == "recurrence" else None,
        }
        for (name, impl, length, mode), ts in times.items()
    ]
    results = summarize(raw, args.peak_gbps)

    return {
        "benchmark": "benchmarks/scan.py",
        "command": " ".join(["python benchmarks/scan.py"] + sys.argv[1:]),
        "device": {**device_info(), "load_average_at_start": load_at_start},
        "config": {
            "batch": args.batch,
            "P": args.P,
            "H": args.H,
            "dtype": "complex64",
            "lengths": args.lengths,
            "impls": list(args.impls),
            "chunk_size": args.chunk_size,
            "repeats": args.repeats,
            "statistic": "median (and min) over round-robin repeats",
            "peak_gbps": args.peak_gbps,
            "max_rel_error_allowed": args.max_rel_error,
            "pallas_interpreted": "pallas" in args.impls
            and jax.default_backend() not in ("gpu", "tpu"),
        },
        "fastest": fastest(results),
        "results": results,
    }


def summarize(raw: list[dict], peak_gbps: float | None = None) -> list[dict]:
    """Adds medians, minima, ratios against "associative" (same case, length and mode)
    and, where the minimal bytes are known, achieved bandwidth (and its fraction of peak)."""

    def stat(fn, r):
        return fn(r["times_s"])

    by_key = {(r["case"], r["impl"], r["length"], r["mode"]): r for r in raw}
    results = []
    for r in raw:
        base = by_key.get((r["case"], "associative", r["length"], r["mode"]))
        med, low = statistics.median(r["times_s"]), min(r["times_s"])
        gbps = r["min_bytes"] / med / 1e9 if r.get("min_bytes") else None
        results.append(
            {
                **r,
                "median_s": med,
                "min_s": low,
                "ratio_vs_associative": med / stat(statistics.median, base) if base else None,
                "ratio_vs_associative_min": low / stat(min, base) if base else None,
                "achieved_gbps": gbps,
                "fraction_of_peak": gbps / peak_gbps if gbps and peak_gbps else None,
            }
        )
    return results


def fastest(results: list[dict]) -> dict:
    """Fastest implementation per case and mode: geometric mean of the medians over lengths."""
    out = {}
    for name in sorted({r["case"] for r in results}):
        for mode in ("fwd", "fwd_bwd"):
            rows = [r for r in results if r["case"] == name and r["mode"] == mode]
            impls = sorted({r["impl"] for r in rows})
            score = {
                i: np.mean([np.log(r["median_s"]) for r in rows if r["impl"] == i]) for i in impls
            }
            out[f"{name}/{mode}"] = min(score, key=score.get)
    return out


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = report["results"]
    case_names = [c for c in ("recurrence", "s5_layer") if any(r["case"] == c for r in res)]
    fig, axes = plt.subplots(2, len(case_names), figsize=(6 * len(case_names), 8), squeeze=False)
    colors = {
        "associative": "tab:blue",
        "sequential": "tab:orange",
        "chunked": "tab:green",
        "pallas": "tab:red",
    }
    styles = {"fwd": "-", "fwd_bwd": "--"}
    for col, name in enumerate(case_names):
        for impl in report["config"]["impls"]:
            for mode in ("fwd", "fwd_bwd"):
                rows = sorted(
                    (
                        r
                        for r in res
                        if r["case"] == name and r["impl"] == impl and r["mode"] == mode
                    ),
                    key=lambda r: r["length"],
                )
                lengths = [r["length"] for r in rows]
                label = f"{impl} {mode.replace('_', '+')}"
                kw = dict(color=colors.get(impl), linestyle=styles[mode], marker="o", label=label)
                axes[0, col].plot(lengths, [1e3 * r["median_s"] for r in rows], **kw)
                if rows and rows[0]["ratio_vs_associative"] is not None:
                    speedup = [1.0 / r["ratio_vs_associative"] for r in rows]
                    axes[1, col].plot(lengths, speedup, **kw)
                    # Ratio of the fastest repeats: less sensitive to load from other work.
                    mins = [1.0 / r["ratio_vs_associative_min"] for r in rows]
                    axes[1, col].plot(lengths, mins, color=colors.get(impl), marker="x", ls="none")
        title = {"recurrence": "linear_recurrence", "s5_layer": "one S5 layer"}[name]
        cfg = report["config"]
        axes[0, col].set_title(f"{title}: batch {cfg['batch']}, P {cfg['P']}, complex64")
        axes[0, col].set_ylabel("median time [ms]")
        axes[1, col].set_ylabel("speed-up vs associative (same run)\nlines: medians, x: minima")
        axes[1, col].axhline(1.0, color="gray", linewidth=0.8)
        for row in range(2):
            ax = axes[row, col]
            ax.set_xscale("log", base=2)
            ax.set_xlabel("sequence length L")
            ax.grid(True, which="both", alpha=0.3)
        axes[0, col].set_yscale("log")
        axes[1, col].set_yscale("log", base=2)  # one noisy outlier should not flatten the rest
        axes[0, col].legend(fontsize=8)
    dev = report["device"]
    fig.suptitle(
        f"{dev['backend']}: {dev['device_kind']} ({dev['cpu_model']}, {dev['cpu_count']} cores), "
        f"jax {dev['jax']}; shared machine, ratios are side by side",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--lengths",
        type=parse_lengths,
        default=None,
        help="comma list of sequence lengths (default: 1024,4096,16384; on GPU also 65536)",
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--P", type=int, default=256, help="stored (complex) state size")
    parser.add_argument("--H", type=int, default=128, help="features of the S5 layer")
    parser.add_argument(
        "--impls",
        nargs="+",
        default=None,
        choices=IMPLS,
        help="default: all that compile here (pallas only on GPU / TPU)",
    )
    parser.add_argument(
        "--include-interpret",
        action="store_true",
        help="on CPU, add pallas in interpret mode to the defaults (smoke run; not a timing)",
    )
    parser.add_argument(
        "--peak-gbps",
        type=float,
        default=None,
        help="memory bandwidth for the fraction of peak (default by device kind: H100 3350, "
        "H200 4800; none otherwise)",
    )
    parser.add_argument(
        "--max-rel-error",
        type=float,
        default=DEFAULT_MAX_REL_ERROR,
        help="largest error vs the NumPy reference, relative to its largest magnitude, before "
        "the run stops without timing",
    )
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-layer", action="store_true", help="time the recurrence only")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON path (default results/scan_<backend>.json)"
    )
    parser.add_argument(
        "--replot",
        type=Path,
        default=None,
        help="recompute the statistics and the PNG from this JSON's raw times (no timing)",
    )
    args = parser.parse_args(argv)
    backend = jax.default_backend()
    if args.lengths is None:
        args.lengths = list(DEFAULT_LENGTHS.get(backend, DEFAULT_LENGTHS_OTHER))
    if args.impls is None:
        args.impls = default_impls(backend, args.include_interpret)
    if args.peak_gbps is None:
        args.peak_gbps = default_peak_gbps(jax.devices()[0].device_kind)
    if args.quick:
        args.lengths, args.batch, args.P, args.H, args.repeats = [256, 1024], 2, 32, 16, 3

    if args.replot:
        report = json.loads(args.replot.read_text())
        peak = report["config"].get("peak_gbps")
        report["results"] = summarize(report["results"], peak)
        report["fastest"] = fastest(report["results"])
        report["config"]["statistic"] = "median (and min) over round-robin repeats"
        args.out = args.out or args.replot
    else:
        try:
            report = run(args)
        except ValueError as e:
            sys.exit(f"error: {e}")
    # What jaxml/auto_impl.py's SCAN_AUTO_IMPL may name for this backend (fastest and checked).
    report["fastest_correct"] = fastest_correct(report, "recurrence")
    # Smoke runs never overwrite the measured results.
    interpreted = report["config"].get("pallas_interpreted", False)
    suffix = ("_quick" if args.quick else "") + ("_interpret" if interpreted else "")
    out = args.out or RESULTS / f"scan_{backend}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    plot(report, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    for r in sorted(
        report["results"], key=lambda r: (r["case"], r["mode"], r["length"], r["impl"])
    ):
        ratio = r["ratio_vs_associative"]
        ratio = f"   x{ratio:.2f} of associative" if ratio else ""
        bw = ""
        if r.get("achieved_gbps"):
            bw = f"   {r['achieved_gbps']:7.1f} GB/s"
            if r.get("fraction_of_peak"):
                bw += f" ({100 * r['fraction_of_peak']:.0f}% of peak)"
        ms = 1e3 * r["median_s"]
        print(
            f"{r['case']:10s} {r['mode']:7s} L={r['length']:6d} {r['impl']:11s} {ms:9.1f} ms"
            f"{ratio}{bw}"
        )
    print("fastest:", report["fastest"])
    print("fastest correct (recurrence, fwd+bwd):", report["fastest_correct"])


if __name__ == "__main__":
    main()
