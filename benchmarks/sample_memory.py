"""Peak memory of `python -m train.sample` against the number of samples: flat in N.

  python -m train.diffusion --workdir=runs/diffusion_digits
  python benchmarks/sample_memory.py --workdir=runs/diffusion_digits --counts 5000 50000

Runs train.sample once per count (each in a fresh process, so the peaks do not mix) and
records its peak resident memory (ru_maxrss), wall time and images/s. Sampling runs
micro-batches of config.eval.batch_size through one compiled program and writes each as a
shard, so its memory does not grow with N; what does grow is what the digits evaluation
keeps: the images (256 B each at 8×8) and their 512-d features (4 KiB each, float64).
`--sampler`/`--num_steps` pick a cheap sampler by default (Euler, 5 steps): the count, not
the sampler, is what is measured. Writes benchmarks/results/sample_memory_cpu.json.
"""

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# Runs the command and prints the peak RSS (KiB on Linux) of it and its children.
PEAK_RSS = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
    "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def measure(workdir: str, count: int, args, out_dir: Path) -> dict:
    command = [
        sys.executable,
        "-m",
        "train.sample",
        f"--workdir={workdir}",
        f"--num_samples={count}",
        f"--sampler={args.sampler}",
        f"--config.sampler.num_steps={args.num_steps}",
        f"--config.eval.batch_size={args.batch_size}",
        f"--out={out_dir / f'n{count}'}",
    ]
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *command], capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"train.sample failed for {count}:\n{proc.stderr[-3000:]}")
    peak = next(
        int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("PEAK_RSS")
    )
    summary = [line for line in proc.stdout.splitlines() if "samples (" in line]
    row = {
        "num_samples": count,
        "peak_rss_mib": peak / 1024,
        "seconds": seconds,
        "images_per_s_incl_startup": count / seconds,
        "train_sample_output": summary[0] if summary else "",
        "command": " ".join(command[1:]),
    }
    print(f"N={count}: peak RSS {row['peak_rss_mib']:.0f} MiB, {seconds:.0f} s", flush=True)
    return row


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--counts", type=int, nargs="+", default=[5000, 50000])
    parser.add_argument("--sampler", default="euler")
    parser.add_argument("--num_steps", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=1000)
    parser.add_argument("--out", default=str(RESULTS / "sample_memory_cpu.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(args.workdir, n, args, Path(tmp)) for n in args.counts]
    result = {
        "benchmark": "benchmarks/sample_memory.py",
        "command": "python benchmarks/sample_memory.py " + " ".join(sys.argv[1:]),
        "platform": platform.platform(),
        "note": "peak RSS of the whole train.sample process (JAX runtime, compiled sampler, "
        "digits evaluation included)",
        "runs": rows,
        "peak_rss_ratio_largest_to_smallest": rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"],
        "count_ratio": rows[-1]["num_samples"] / rows[0]["num_samples"],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
