"""Share of GroupNorm (+ noise-embedding bias / scale-shift) + SiLU in a U-Net training step.

  python benchmarks/unet_groupnorm.py                 # digits configs and CIFAR-10 DDPM++
  python benchmarks/unet_groupnorm.py --cases digits_small --wall-steps 3

Question: is a fused GroupNorm(+scale/shift)+SiLU kernel worth writing? For each
config it builds the jitted loss + gradient of the diffusion training loss
(`recipe.make_train_loss`, i.e. U-Net forward + backward with dropout) twice:

- "full": the model as it is;
- "stand-in": every GroupNorm, the embedding bias/scale-shift that enters at
  the second norm of a block, and every 4-D SiLU are the identity. This is a
  monkeypatch of `jaxml.models.unet` inside this script only (`_group_norm`, which
  carries the SiLU, and the "affine" Dense returning a constant 0,
  which XLA folds away); the library is unchanged.

(1) XLA cost analysis of the compiled programs (`jit(...).lower().compile()
.cost_analysis()`: "bytes accessed" and "flops"); full - stand-in is the
GroupNorm+SiLU share. The pre-optimisation numbers (`lower().cost_analysis()`,
every op a separate pass) are recorded too.
(2) CPU wall time of the two compiled steps, run alternately; median and fastest
step of each (the fastest is the least disturbed by other load on a shared CPU;
the load average is recorded).

A fused kernel cannot move less than about 5 tensor-sizes per norm site (forward
read x + write y; backward read x and dy, write dx), so the most it can save is
roughly share_bytes - 5 * sum(site bytes); the site list is recorded from the
model. Cost analysis is of the CPU backend's fusion decisions (GPU/TPU fuse
elementwise ops similarly, but the numbers are not theirs).

Writes benchmarks/results/unet_groupnorm_<backend>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxml.diffusion import recipe
from jaxml.models import unet
from train.configs import diffusion_cifar10, diffusion_digits

# name -> (config, batch for cost analysis, batch for wall time, most wall steps).
# CIFAR-10: EDM's batch 512 over 8 GPUs is 64 per device; wall time at a smaller
# batch and fewer steps to keep the run within minutes on a CPU (~5 s per image
# per step).
CASES = {
    "digits_small": (lambda: diffusion_digits.get_config("pfgmpp"), 128, 128, 100),
    "digits16_small": (lambda: diffusion_digits.get_config("pfgmpp16"), 128, 128, 100),
    "cifar10_ddpmpp": (lambda: diffusion_cifar10.get_config("pfgmpp"), 64, 4, 4),
}


@contextmanager
def patched_unet(stand_in: bool, sites: list | None = None):
    """Within the block: the stand-in model (stand_in=True: every GroupNorm(+scale/shift)
    +SiLU site is the identity and the block's embedding "affine" Dense returns 0) and/or
    recording the input shape of every GroupNorm call into `sites`."""
    orig_group_norm, orig_dense = unet._group_norm, unet.Dense

    def group_norm(channels, eps, dtype, name, act=True):
        module = None if stand_in else orig_group_norm(channels, eps, dtype, name, act)

        def apply(x, scale=None, shift=None):
            if sites is not None:
                sites.append((name, tuple(x.shape), jnp.dtype(x.dtype).name))
            return x if stand_in else module(x, scale, shift)

        return apply

    def dense(features, *args, name=None, **kwargs):
        if stand_in and name == "affine":
            return lambda emb: jnp.zeros((emb.shape[0], features), emb.dtype)
        return orig_dense(features, *args, name=name, **kwargs)

    unet._group_norm, unet.Dense = group_norm, dense
    try:
        yield
    finally:
        unet._group_norm, unet.Dense = orig_group_norm, orig_dense


def _cost(analysis) -> dict:
    if isinstance(analysis, list | tuple):  # older jax: one dict per program
        analysis = analysis[0]
    return {
        "bytes_accessed": float(analysis.get("bytes accessed", 0.0)),
        "flops": float(analysis.get("flops", 0.0)),
        "transcendentals": float(analysis.get("transcendentals", 0.0)),
    }


def build(config, batch_size: int, stand_in: bool):
    """(jitted loss+grad, compiled, args, {pre, post} cost, compile seconds)."""
    with patched_unet(stand_in):
        network = recipe.build_network(config.model)
        loss_fn = recipe.make_train_loss(network, config)
        shape = (batch_size, *recipe.image_shape(config))
        param_shapes = jax.eval_shape(
            lambda: network.init(
                jax.random.PRNGKey(0), jnp.zeros((2, *shape[1:])), jnp.zeros((2,))
            )["params"]
        )
        rng = np.random.default_rng(0)
        params = jax.tree.map(
            lambda s: jnp.asarray(0.02 * rng.standard_normal(s.shape), s.dtype), param_shapes
        )
        batch = {
            "image": jnp.asarray(rng.uniform(-1, 1, shape), jnp.float32),
            "label": jnp.zeros((batch_size,), jnp.int32),
        }
        args = (params, {}, batch, jax.random.PRNGKey(1))
        grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
        start = time.perf_counter()
        lowered = grad_fn.lower(*args)
        compiled = lowered.compile()
        compile_s = time.perf_counter() - start
    cost = {
        "pre_fusion": _cost(lowered.cost_analysis()),
        "compiled": _cost(compiled.cost_analysis()),
    }
    return compiled, args, cost, compile_s


def norm_sites(config, batch_size: int) -> list:
    sites: list = []
    with patched_unet(False, sites):
        network = recipe.build_network(config.model)
        shape = (batch_size, *recipe.image_shape(config))
        x = jax.ShapeDtypeStruct(shape, jnp.float32)
        c = jax.ShapeDtypeStruct((batch_size,), jnp.float32)
        jax.eval_shape(network.init, jax.random.PRNGKey(0), x, c)
    # init traces every layer once: one record per GroupNorm site.
    return sites


def wall_times(compiled_full, args_full, compiled_stub, args_stub, steps: int) -> dict:
    for compiled, args in ((compiled_full, args_full), (compiled_stub, args_stub)):
        jax.block_until_ready(compiled(*args))  # warm-up
    times = {"full": [], "stand_in": []}
    for _ in range(steps):
        for name, compiled, args in (
            ("full", compiled_full, args_full),
            ("stand_in", compiled_stub, args_stub),
        ):
            start = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            times[name].append(time.perf_counter() - start)
    full, stub = (float(np.median(times[k])) for k in ("full", "stand_in"))
    full_min, stub_min = (float(np.min(times[k])) for k in ("full", "stand_in"))
    return {
        "steps": steps,
        "step_times_s": times,
        "median_full_s": full,
        "median_stand_in_s": stub,
        "share_of_time": (full - stub) / full,
        # The fastest step of each is the least disturbed by other load on a shared CPU.
        "min_full_s": full_min,
        "min_stand_in_s": stub_min,
        "share_of_time_min": (full_min - stub_min) / full_min,
        "load_average_after": os.getloadavg(),
    }


def share(full: dict, stub: dict) -> dict:
    out = {}
    for key in ("bytes_accessed", "flops", "transcendentals"):
        diff = full[key] - stub[key]
        out[key] = {"full": full[key], "stand_in": stub[key], "diff": diff}
        out[key]["share"] = diff / full[key] if full[key] else 0.0
    return out


def measure(name: str, get_config, cost_batch: int, wall_batch: int, wall_steps: int) -> dict:
    config = get_config()
    result: dict = {"model": config.model.preset, "image_shape": recipe.image_shape(config)}
    sites = norm_sites(config, cost_batch)
    site_bytes = sum(
        int(np.prod(s)) * jnp.dtype(d).itemsize for _, s, d in sites
    )  # one tensor per GroupNorm site

    compiled_full, args_full, cost_full, c_full = build(config, cost_batch, False)
    compiled_stub, args_stub, cost_stub, c_stub = build(config, cost_batch, True)
    cost = {k: share(cost_full[k], cost_stub[k]) for k in ("compiled", "pre_fusion")}
    gn_bytes = cost["compiled"]["bytes_accessed"]["diff"]
    total = cost["compiled"]["bytes_accessed"]["full"]
    fused_floor = 5 * site_bytes
    result["cost_analysis"] = {
        "batch_size": cost_batch,
        "compile_s": {"full": c_full, "stand_in": c_stub},
        "norm_sites": len(sites),
        "norm_site_bytes_sum": site_bytes,
        **cost,
        "fused_kernel_floor_bytes": fused_floor,
        "fused_kernel_max_saving_bytes": gn_bytes - fused_floor,
        "fused_kernel_max_saving_share": (gn_bytes - fused_floor) / total,
        "share_exceeds_25pct_bytes": gn_bytes / total > 0.25,
    }
    print(
        f"{name} (cost, batch {cost_batch}): GN+SiLU {100 * gn_bytes / total:.1f}% of bytes "
        f"({gn_bytes / 2**20:.0f} of {total / 2**20:.0f} MiB), "
        f"{100 * cost['compiled']['flops']['share']:.1f}% of flops; fused kernel saves <= "
        f"{100 * (gn_bytes - fused_floor) / total:.1f}% of bytes",
        flush=True,
    )
    if wall_steps:
        if wall_batch != cost_batch:
            del compiled_full, compiled_stub, args_full, args_stub
            compiled_full, args_full, _, _ = build(config, wall_batch, False)
            compiled_stub, args_stub, _, _ = build(config, wall_batch, True)
        wall = wall_times(compiled_full, args_full, compiled_stub, args_stub, wall_steps)
        result["wall_time"] = {"batch_size": wall_batch, **wall}
        print(
            f"{name} (wall, batch {wall_batch}): full {wall['median_full_s']:.3f} s, "
            f"stand-in {wall['median_stand_in_s']:.3f} s -> "
            f"GN+SiLU {100 * wall['share_of_time']:.1f}% of the step "
            f"({100 * wall['share_of_time_min']:.1f}% by fastest step)",
            flush=True,
        )
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--wall-steps", type=int, default=5, help="0: cost analysis only")
    args = parser.parse_args()
    results = {
        "benchmark": "benchmarks/unet_groupnorm.py",
        "what": "U-Net loss+grad (training loss, dropout on): full model vs GroupNorm, "
        "embedding bias/scale-shift and 4-D SiLU replaced by identity",
        "device": {
            "backend": jax.default_backend(),
            "kind": jax.devices()[0].device_kind,
            "platform": platform.platform(),
            "jax": jax.__version__,
        },
        "cases": {},
    }
    for name in args.cases:
        get_config, cost_batch, wall_batch, max_steps = CASES[name]
        steps = min(args.wall_steps, max_steps)
        results["cases"][name] = measure(name, get_config, cost_batch, wall_batch, steps)
    out = Path(__file__).parent / "results" / f"unet_groupnorm_{jax.default_backend()}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
