"""The U-Nets' 3x3 convolutions on CPU: XLA (as the train step compiles them) vs PyTorch.

  python benchmarks/conv_cpu.py                          # the four diffusion_throughput configs
  python benchmarks/conv_cpu.py --cases=unet7m_16x16 --repeats=3

Why this exists: on XLA:CPU a convolution thunk hands its work to Eigen's thread pool and
returns, so a profile of the train step shows only the other ops. This benchmark times the
convolutions themselves. For each config (benchmarks/diffusion_throughput.py's CASES) the
convolutions of one forward pass are read from the network's jaxpr (input shape, kernel,
count); each distinct one is timed three ways, the three convolutions of a train step:
forward, input gradient and weight gradient. jax: `jax.jit` with the train step's XLA:CPU
options (`jaxml.training.xla_cpu_options`); PyTorch: `F.conv2d`,
`torch.nn.grad.conv2d_input` / `conv2d_weight` (oneDNN), fp32, 2 intra-op threads, NCHW.
Both sides are timed in turns; the median of each is weighted by the count to give the
convolution time of one train step. Writes benchmarks/results/conv_cpu.json and .png.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import sys
from pathlib import Path

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # diffusion_throughput next to this

import diffusion_throughput  # noqa: E402

from jaxml import parallel  # noqa: E402
from jaxml.diffusion import recipe  # noqa: E402
from jaxml.training.xla_cpu_options import train_step_compiler_options  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("forward", "input_grad", "weight_grad")


def network_convolutions(config, batch_size: int) -> collections.Counter:
    """Counter of (input NHWC shape, kernel HWIO shape) over one forward pass's convolutions."""
    mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
    network, _, state, _ = recipe.create_state(config, mesh, abstract_only=True)
    x = jax.ShapeDtypeStruct((batch_size, *recipe.image_shape(config)), jnp.float32)
    c_noise = jax.ShapeDtypeStruct((batch_size,), jnp.float32)
    jaxpr = jax.make_jaxpr(lambda p, x, c: network.apply({"params": p}, x, c, None))(
        state.params, x, c_noise
    )
    return count_convolutions(jaxpr.jaxpr)


def count_convolutions(jaxpr) -> collections.Counter:
    """Counter of (lhs shape, rhs shape) of the stride-1 "SAME" convolutions in `jaxpr`,
    sub-jaxprs (jit, custom_vjp, checkpoint, scan bodies) included; a loop body's count
    once, however many times it runs (the U-Nets have no loops)."""
    found = collections.Counter()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                lhs, rhs = (tuple(v.aval.shape) for v in eqn.invars)
                p = eqn.params
                if p["window_strides"] != (1, 1) or p["feature_group_count"] != 1:
                    raise ValueError(f"not a stride-1 dense convolution: {p}")
                if rhs[0] != rhs[1] or any(lo != hi for lo, hi in p["padding"]):
                    raise ValueError(f"not a square 'SAME' kernel: {rhs}, {p['padding']}")
                found[(lhs, rhs)] += 1
            for value in eqn.params.values():
                for sub in value if isinstance(value, (tuple, list)) else (value,):
                    if isinstance(sub, jax.extend.core.ClosedJaxpr):
                        walk(sub.jaxpr)
                    elif isinstance(sub, jax.extend.core.Jaxpr):
                        walk(sub)

    walk(jaxpr)
    return found


def _conv(x, w):
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def jax_parts(x_shape, w_shape, options):
    """{part: fn()} for one convolution, each jitted as the train step compiles it."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=w_shape) / np.sqrt(np.prod(w_shape[:3])), jnp.float32)
    dy = jnp.asarray(rng.normal(size=x_shape[:3] + w_shape[3:]), jnp.float32)
    fns = {
        "forward": lambda x, w, dy: _conv(x, w),
        "input_grad": lambda x, w, dy: jax.vjp(lambda x: _conv(x, w), x)[1](dy)[0],
        "weight_grad": lambda x, w, dy: jax.vjp(lambda w: _conv(x, w), w)[1](dy)[0],
    }
    out = {}
    for part, fn in fns.items():
        compiled = jax.jit(fn, compiler_options=options).lower(x, w, dy).compile()
        out[part] = lambda c=compiled: jax.block_until_ready(c(x, w, dy))
    return out


def torch_parts(x_shape, w_shape):
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    b, h, wd, c = x_shape
    k, _, _, o = w_shape
    x = torch.from_numpy(rng.normal(size=(b, c, h, wd)).astype(np.float32))
    w = torch.from_numpy(rng.normal(size=(o, c, k, k)).astype(np.float32))
    dy = torch.from_numpy(rng.normal(size=(b, o, h, wd)).astype(np.float32))
    pad = k // 2

    def run(fn):
        def call():
            with torch.no_grad():
                fn()

        return call

    return {
        "forward": run(lambda: F.conv2d(x, w, padding=pad)),
        "input_grad": run(lambda: torch.nn.grad.conv2d_input(x.shape, w, dy, padding=pad)),
        "weight_grad": run(lambda: torch.nn.grad.conv2d_weight(x, w.shape, dy, padding=pad)),
    }


def measure(name: str, repeats: int) -> dict:
    get_config, batch_size, _, _ = diffusion_throughput.CASES[name]
    convs = network_convolutions(get_config(), batch_size)
    options = train_step_compiler_options("cpu")
    rows = []
    totals = {side: {part: 0.0 for part in PARTS} for side in ("jax", "torch")}
    for (x_shape, w_shape), count in sorted(convs.items()):
        sides = {
            "jax": jax_parts(x_shape, w_shape, options),
            "torch": torch_parts(x_shape, w_shape),
        }
        for fns in sides.values():
            for fn in fns.values():
                fn()  # warm-up
        times = {side: {part: [] for part in PARTS} for side in sides}
        for _ in range(repeats):
            for side, fns in sides.items():
                for part, fn in fns.items():
                    times[side][part] += [diffusion_throughput.timed(fn) for _ in range(3)]
        row = {"input": list(x_shape), "kernel": list(w_shape), "count": count}
        for side in sides:
            row[side] = {part: float(np.median(times[side][part])) for part in PARTS}
            for part in PARTS:
                totals[side][part] += count * row[side][part]
        rows.append(row)
        print(
            f"  {name} x{x_shape} k{w_shape} (x{count}): "
            + ", ".join(
                f"{part} jax/torch {row['jax'][part] / row['torch'][part]:.2f}" for part in PARTS
            ),
            flush=True,
        )
    step = {side: sum(totals[side].values()) for side in totals}
    return {
        "batch_size": batch_size,
        "convolutions": rows,
        "per_step_s": {side: {**totals[side], "total": step[side]} for side in totals},
        "jax_over_torch_time": {
            **{p: totals["jax"][p] / totals["torch"][p] for p in PARTS},
            "total": step["jax"] / step["torch"],
        },
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["cases"])
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.8))
    width = 0.2
    for i, part in enumerate(PARTS + ("total",)):
        ratios = [results["cases"][n]["jax_over_torch_time"][part] for n in names]
        ax.bar(np.arange(len(names)) + (i - 1.5) * width, ratios, width, label=part)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel("XLA time / PyTorch time (per train step)")
    ax.set_title("3x3 convolutions of one U-Net train step on CPU, timed in turns")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    cases = diffusion_throughput.CASES
    parser.add_argument("--cases", default=",".join(cases), help="comma-separated case names")
    parser.add_argument("--repeats", type=int, default=5, help="turns per convolution")
    parser.add_argument("--out", default="conv_cpu", help="results/<out>.json and .png")
    args = parser.parse_args()
    names = [n for n in args.cases.split(",") if n]
    unknown = [n for n in names if n not in cases]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {sorted(cases)}")
    if jax.default_backend() != "cpu":
        parser.error("this benchmark compares XLA:CPU with PyTorch on CPU; run it on a CPU backend")

    import torch

    torch.set_num_threads(diffusion_throughput.TORCH_THREADS)
    results = {
        "benchmark": "benchmarks/conv_cpu.py",
        "command": "python " + " ".join(["benchmarks/conv_cpu.py", *sys.argv[1:]]),
        "device": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "torch": torch.__version__,
            "torch_threads": diffusion_throughput.TORCH_THREADS,
            "load_average_before": list(os.getloadavg()),
        },
        "cases": {},
    }
    path = RESULTS / f"{args.out}.json"
    for name in names:
        r = results["cases"][name] = measure(name, args.repeats)
        print(
            f"{name}: convolutions of one step jax {r['per_step_s']['jax']['total'] * 1e3:.0f} ms, "
            f"torch {r['per_step_s']['torch']['total'] * 1e3:.0f} ms "
            f"(jax/torch time {r['jax_over_torch_time']['total']:.2f})",
            flush=True,
        )
        results["device"]["load_average_after"] = list(os.getloadavg())
        path.write_text(json.dumps(results, indent=2))
    plot(results, path.with_suffix(".png"))


if __name__ == "__main__":
    main()
