"""Training throughput (images/s) of diffusion configs on the local backend.

  python benchmarks/diffusion_throughput.py                 # digits default and CIFAR-10 DDPM++

Times the jitted train step (U-Net + PFGM++ loss + Adam + EMA) on 1 device after
compilation; writes benchmarks/results/diffusion_throughput_<backend>.json.
Absolute numbers only mean something on the machine named in the JSON.
"""

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import numpy as np

from jaxml import parallel, training
from jaxml.diffusion import recipe
from train.configs import diffusion_cifar10, diffusion_digits

CASES = {
    "digits_pfgmpp (8x8, digits_small)": (diffusion_digits.get_config, 128),
    "cifar10_ddpmpp (32x32, 55.7M params)": (diffusion_cifar10.get_config, 8),
}


def measure(get_config, batch_size: int, steps: int) -> dict:
    config = get_config()
    config.data.batch_size = batch_size
    mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
    network, tx, state, shardings = recipe.create_state(config, mesh)
    step = training.make_train_step(
        recipe.make_train_loss(network, config),
        tx,
        state_shardings=shardings,
        batch_sharding=parallel.batch_sharding(mesh),
        ema_decay=0.999,
    )
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.uniform(-1, 1, (batch_size, *recipe.image_shape(config))).astype(np.float32),
        "label": np.zeros((batch_size,), np.int32),
    }
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return {
        "batch_size": batch_size,
        "params": int(sum(x.size for x in jax.tree.leaves(state.params))),
        "compile_and_first_step_s": compile_s,
        "step_times_s": times,
        "median_step_s": median,
        "images_per_s": batch_size / median,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    results = {
        "benchmark": "benchmarks/diffusion_throughput.py",
        "device": {
            "backend": jax.default_backend(),
            "kind": jax.devices()[0].device_kind,
            "platform": platform.platform(),
        },
        "cases": {},
    }
    for name, (get_config, batch_size) in CASES.items():
        results["cases"][name] = r = measure(get_config, batch_size, args.steps)
        print(
            f"{name}: {r['images_per_s']:.1f} images/s at batch {batch_size} "
            f"(compile {r['compile_and_first_step_s']:.0f} s)",
            flush=True,
        )
    out = Path(__file__).parent / "results" / f"diffusion_throughput_{jax.default_backend()}.json"
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
