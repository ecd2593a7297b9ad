"""Timing of the attention implementations behind `jaxml.models.attention`.

    python benchmarks/attention.py                 # on a GPU / TPU: the full set
    python benchmarks/attention.py --quick          # CPU smoke run (small shapes)

For every shape (batch, L, heads, head_dim) in bfloat16 and mode (forward;
forward + backward of a scalar loss), each implementation is first checked
against the float32 plain-jnp reference (output and gradients, error relative to
the reference's largest magnitude); one off by more than --max-rel-error is
reported and never timed. Then all are timed round-robin --repeats times; medians.
Writes benchmarks/results/attention_<backend>.json in the format that
`jaxml.auto_impl.fastest_correct(report, "attention")` reads, so the result can set
`ATTENTION_AUTO_IMPL[backend]`.

Implementations: "xla" and "reference" everywhere; "cudnn" and "pallas_gpu" on a
GPU, "pallas_tpu" on a TPU. The Pallas kernels are not timed in the interpreter.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxml.models.attention import dot_product_attention, reference_attention

RESULTS = Path(__file__).resolve().parent / "results"
# (batch, L, heads, head_dim): U-Net-like token counts (16x16, 32x32, 64x64 maps).
SHAPES = [(32, 256, 4, 64), (8, 1024, 4, 64), (2, 4096, 4, 64)]
QUICK_SHAPES = [(2, 64, 2, 32), (1, 256, 2, 32)]
# bf16 inputs against a float32 reference: ~2^-8 relative rounding, summed over L.
DEFAULT_MAX_REL_ERROR = 3e-2


def default_impls(backend: str) -> list[str]:
    extra = {"gpu": ["cudnn", "pallas_gpu"], "tpu": ["pallas_tpu"]}.get(backend, [])
    return ["xla", "reference"] + extra


def fns(impl: str):
    attend = lambda q, k, v: dot_product_attention(q, k, v, impl=impl)

    def loss(q, k, v):
        return jnp.sum(attend(q, k, v).astype(jnp.float32) ** 2)

    return jax.jit(attend), jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def rel_error(x, ref) -> float:
    x, ref = np.asarray(x, np.float32), np.asarray(ref, np.float32)
    return float(np.max(np.abs(x - ref)) / max(1.0, float(np.max(np.abs(ref)))))


def timed(fn, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def run(args) -> dict:
    rng = np.random.default_rng(0)
    results, rejected = [], []
    for shape in args.shapes:
        q, k, v = (jnp.asarray(rng.normal(size=shape), jnp.bfloat16) for _ in range(3))
        f32 = [x.astype(jnp.float32) for x in (q, k, v)]
        scale = 1.0 / shape[-1] ** 0.5
        ref_fwd = reference_attention(*f32, scale=scale)
        ref_loss = lambda q, k, v, s=scale: jnp.sum(reference_attention(q, k, v, scale=s) ** 2)
        ref_bwd = jax.grad(ref_loss, argnums=(0, 1, 2))(*f32)
        cases = []
        for impl in args.impls:
            fwd, bwd = fns(impl)
            for mode, fn, ref in (("fwd", fwd, [ref_fwd]), ("fwd_bwd", bwd, list(ref_bwd))):
                start = time.perf_counter()
                out = fn(q, k, v)
                out = [out] if mode == "fwd" else list(out)
                jax.block_until_ready(out)
                compile_s = time.perf_counter() - start
                err = max(rel_error(o, r) for o, r in zip(out, ref))
                row = {"case": "attention", "impl": impl, "shape": list(shape)}
                row.update(length=shape[1], mode=mode, max_rel_error=err, compile_s=compile_s)
                if not err <= args.max_rel_error:
                    rejected.append(row)
                    print(f"REJECTED {impl} {shape} {mode}: error {err:.2e}", flush=True)
                    continue
                cases.append((row, fn))
        for row, _ in cases:
            row["times_s"] = []
        for _ in range(args.repeats):
            for row, fn in cases:
                row["times_s"].append(timed(fn, q, k, v))
        for row, _ in cases:
            row["median_s"] = statistics.median(row["times_s"])
            print(
                f"{row['impl']:11s} {str(shape):20s} {row['mode']:8s} "
                f"{1e3 * row['median_s']:9.3f} ms  err {row['max_rel_error']:.1e}",
                flush=True,
            )
            results.append(row)
    return {
        "benchmark": "benchmarks/attention.py",
        "device": {"backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind},
        "config": {
            "dtype": "bfloat16",
            "shapes": [list(s) for s in args.shapes],
            "impls": args.impls,
            "repeats": args.repeats,
            "max_rel_error_allowed": args.max_rel_error,
            "pallas_interpreted": False,
        },
        "rejected": rejected,
        "results": results,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--impls", nargs="+", default=None)
    parser.add_argument("--quick", action="store_true", help="small shapes, 2 repeats")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--max-rel-error", type=float, default=DEFAULT_MAX_REL_ERROR)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    backend = jax.default_backend()
    args.impls = args.impls or default_impls(backend)
    args.shapes = QUICK_SHAPES if args.quick else SHAPES
    if args.quick:
        args.repeats = min(args.repeats, 2)
    report = run(args)
    from jaxml.auto_impl import fastest_correct  # noqa: PLC0415

    report["fastest_correct"] = {
        mode: fastest_correct(report, "attention", mode) for mode in ("fwd", "fwd_bwd")
    }
    print("fastest correct:", report["fastest_correct"])
    suffix = "_quick" if args.quick else ""
    out = args.out or RESULTS / f"attention_{backend}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
