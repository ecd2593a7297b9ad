"""U-Net train-step throughput in float32 and bfloat16: images/s and MFU.

    python benchmarks/unet_step.py                      # both presets, fp32 and bf16
    python benchmarks/unet_step.py --presets digits_small --steps 3 --out /tmp/u.json

One jitted step = EDM-style denoising loss (x + sigma * noise through the U-Net,
MSE against x) + gradients + Adam + an EMA of the parameters, on one device, the
same work as the training loop's step. It needs only jax, flax, optax and jaxml's
model code (no data stack), so it runs on a bare GPU machine.

MFU: FLOPs per step from XLA's cost analysis of the compiled step, divided by the
median step time and by the device's peak (dense) FLOP/s for the dtype, from
PEAK_TFLOPS by device kind; None where the peak is unknown (CPU).
Writes benchmarks/results/unet_step_<device>.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxml.models.unet import UNet, unet_config

RESULTS = Path(__file__).resolve().parent / "results"
# preset -> (image shape, batch on an accelerator, batch on CPU)
PRESETS = {
    "digits_small": ((8, 8, 1), 128, 128),
    "cifar10_ddpmpp": ((32, 32, 3), 64, 8),
}
# Dense peak TFLOP/s by a substring of jax's device_kind: (float32 via TF32, bfloat16).
PEAK_TFLOPS = {"H100": (494.0, 989.0), "H200": (494.0, 989.0)}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def device_name() -> str:
    """A file-name-safe device name, e.g. "nvidia_h200" or "cpu"."""
    kind = jax.devices()[0].device_kind
    return re.sub(r"[^a-z0-9]+", "_", kind.lower()).strip("_") or jax.default_backend()


def peak_flops(dtype_name: str) -> float | None:
    kind = jax.devices()[0].device_kind
    for key, (fp32, bf16) in PEAK_TFLOPS.items():
        if key in kind:
            return (bf16 if dtype_name == "bfloat16" else fp32) * 1e12
    return None


def make_step(network: UNet, tx):
    """The jitted train step: (params, ema, opt_state, x, key) -> same + loss."""

    def loss_fn(params, x, key):
        k_sigma, k_noise, k_drop = jax.random.split(key, 3)
        sigma = jnp.exp(-1.2 + 1.2 * jax.random.normal(k_sigma, (x.shape[0],)))
        noisy = x + sigma[:, None, None, None] * jax.random.normal(k_noise, x.shape)
        out = network.apply(
            {"params": params}, noisy, jnp.log(sigma) / 4, train=True, rngs={"dropout": k_drop}
        )
        return jnp.mean((out.astype(jnp.float32) - x) ** 2)

    @jax.jit
    def step(params, ema, opt_state, x, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        ema = jax.tree.map(lambda e, p: 0.999 * e + 0.001 * p, ema, params)
        return params, ema, opt_state, loss

    return step


def measure(preset: str, dtype_name: str, batch: int, steps: int) -> dict:
    shape, _, _ = PRESETS[preset]
    network = UNet(**unet_config(preset, dtype=DTYPES[dtype_name]))
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (batch, *shape)), jnp.float32)
    params = jax.jit(network.init)(jax.random.PRNGKey(0), x[:2], jnp.zeros((2,)))["params"]
    tx = optax.adam(2e-4)
    opt_state = tx.init(params)
    ema = params
    step = make_step(network, tx)
    key = jax.random.PRNGKey(1)
    start = time.perf_counter()
    compiled = step.lower(params, ema, opt_state, x, key).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", 0.0)) if cost else 0.0
    state = compiled(params, ema, opt_state, x, key)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - start
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        state = compiled(*state[:3], x, jax.random.fold_in(key, i))
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
    loss = float(state[3])
    if not np.isfinite(loss):
        raise FloatingPointError(f"{preset} {dtype_name}: non-finite loss {loss}")
    median = statistics.median(times)
    peak = peak_flops(dtype_name)
    n_params = sum(p.size for p in jax.tree.leaves(params))
    return {
        "preset": preset,
        "dtype": dtype_name,
        "batch": batch,
        "params": int(n_params),
        "compile_and_first_step_s": compile_s,
        "step_times_s": times,
        "median_step_s": median,
        "images_per_s": batch / median,
        "flops_per_step": flops,
        "achieved_tflops": flops / median / 1e12 if flops else None,
        "mfu": flops / median / peak if flops and peak else None,
        "loss": loss,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per case")
    parser.add_argument("--batch", type=int, default=None, help="override every preset's batch")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    accelerator = jax.default_backend() in ("gpu", "tpu")
    results = []
    for preset in args.presets:
        for dtype_name in args.dtypes:
            batch = args.batch or PRESETS[preset][1 if accelerator else 2]
            r = measure(preset, dtype_name, batch, args.steps)
            mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
            print(
                f"{preset:15s} {dtype_name:9s} batch {batch:4d}: {r['images_per_s']:9.1f} img/s, "
                f"MFU {mfu}, compile {r['compile_and_first_step_s']:.1f}s",
                flush=True,
            )
            results.append(r)
    report = {
        "benchmark": "benchmarks/unet_step.py",
        "command": "python benchmarks/unet_step.py " + " ".join(argv or sys.argv[1:]),
        "device": {
            "backend": jax.default_backend(),
            "device_kind": jax.devices()[0].device_kind,
            "jax": jax.__version__,
        },
        "results": results,
    }
    out = args.out or RESULTS / f"unet_step_{device_name()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
