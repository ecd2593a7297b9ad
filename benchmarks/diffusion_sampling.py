"""Sampling throughput of the micro-batched sampler: per-image noise keys (vmap) vs per-batch.

  python benchmarks/diffusion_sampling.py [--num=512 --batch=128]

The digits default U-Net (random init; the cost does not depend on the weights) with the
config's Restart sampler (NFE 43), on 1 device. Per-image keys make every image depend on
its index only (chunking-independent results); this measures what that costs against
drawing the noise per batch. Also checks that chunked output equals one-chunk output.
Writes benchmarks/results/diffusion_sampling_<backend>.json.
"""

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import numpy as np

from jaxml import parallel
from jaxml.diffusion import recipe
from train.configs import diffusion_digits


def measure(per_sample: bool, num: int, batch: int) -> tuple[dict, np.ndarray]:
    config = diffusion_digits.get_config()
    mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
    network, _, state, _ = recipe.create_state(config, mesh)
    sample_fn = recipe.make_sample_fn(network, config, per_sample=per_sample)
    kwargs = dict(
        batch_sharding=parallel.batch_sharding(mesh),
        replicated=parallel.replicated(mesh),
        batch_size=batch,
        progress=False,
    )
    key = jax.random.PRNGKey(0)
    start = time.perf_counter()
    recipe.sample_images(sample_fn, state.ema_params, key, config, batch, **kwargs)
    first = time.perf_counter() - start
    start = time.perf_counter()
    images, nfe = recipe.sample_images(sample_fn, state.ema_params, key, config, num, **kwargs)
    seconds = time.perf_counter() - start
    row = {
        "per_sample_keys": per_sample,
        "nfe": nfe,
        "micro_batch": batch,
        "num_samples": num,
        "compile_and_first_batch_s": first,
        "sampling_s": seconds,
        "images_per_s": num / seconds,
    }
    return row, images


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num", type=int, default=512)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    rows = []
    for per_sample in (True, False):
        row, images = measure(per_sample, args.num, args.batch)
        if per_sample:  # the same images when the whole run is one chunk
            config = diffusion_digits.get_config()
            mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
            network, _, state, _ = recipe.create_state(config, mesh)
            whole, _ = recipe.sample_images(
                recipe.make_sample_fn(network, config),
                state.ema_params,
                jax.random.PRNGKey(0),
                config,
                args.num,
                batch_sharding=parallel.batch_sharding(mesh),
                replicated=parallel.replicated(mesh),
                batch_size=args.num,
                progress=False,
            )
            row["max_abs_diff_chunked_vs_one_chunk"] = float(np.abs(whole - images).max())
        rows.append(row)
        print(json.dumps(row), flush=True)
    ratio = rows[0]["images_per_s"] / rows[1]["images_per_s"]
    print(f"per-image keys / per-batch keys throughput: {ratio:.3f}")
    out = Path(__file__).parent / "results" / f"diffusion_sampling_{jax.default_backend()}.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "benchmarks/diffusion_sampling.py",
                "device": {
                    "backend": jax.default_backend(),
                    "kind": jax.devices()[0].device_kind,
                    "platform": platform.platform(),
                },
                "rows": rows,
                "throughput_ratio_per_image_over_per_batch_keys": ratio,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
