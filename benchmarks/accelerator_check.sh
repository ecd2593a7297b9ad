#!/usr/bin/env bash
# One-shot accelerator check: run it once on the first GPU/TPU machine jaxml gets.
#
#   bash benchmarks/accelerator_check.sh              # the real run, < 8 min on one H100/H200
#   bash benchmarks/accelerator_check.sh --dry-run    # print the plan and check imports (seconds)
#   bash benchmarks/accelerator_check.sh --smoke      # every step, tiny sizes (CPU is fine)
#
# Steps (each under its own `timeout`, so one hang cannot eat the budget):
#   1. the compiled kernel tests: pytest -m "gpu or tpu" on tests/test_pallas_scan.py and
#      tests/test_pallas_attention.py (the Pallas scan, both directions, bf16, vjp; the
#      shipped flash-attention kernels), junit XML;
#   2. benchmarks/scan.py: every scan implementation checked against NumPy, then timed;
#      achieved GB/s and fraction of peak HBM bandwidth;
#   3. benchmarks/unet_step.py: U-Net train step (Adam + EMA) in float32 and bfloat16,
#      img/s and MFU, digits_small and CIFAR-10 DDPM++;
#   4. benchmarks/attention.py: xla / reference / cudnn / pallas_* timed after a check
#      against the float32 reference.
# Output: benchmarks/results/accelerator_<device>/ with one JSON per step and
# summary.json (exit code and seconds of each step), <device> e.g. nvidia_h200.
# Afterwards: commit the directory, and set jaxml/auto_impl.py's SCAN_AUTO_IMPL /
# ATTENTION_AUTO_IMPL from the "fastest correct" lines printed by steps 2 and 4
# (tests/test_linear_recurrence.py checks the table against scan_<backend>.json:
# copy accelerator_<device>/scan.json there when setting an entry).
#
# Wheels. These steps import only jax, flax, optax, numpy, pytest and this repo, which
# the known GPU machine (jax 0.11.x with the CUDA plugin) has. The rest of jaxml (data,
# training entrypoints, the full test suite) also needs wheels that machine lacks:
#   tensorflow-datasets grain array-record ml_collections tensorboardX mnist1d
# (plus importlib_resources, which TFDS needs). On a machine without network, bring them:
#   pip download -d wheels/ tensorflow-datasets grain array-record ml_collections \
#       tensorboardX mnist1d importlib_resources   # on a networked machine, same Python
#   pip install --no-index --find-links wheels/ <the same names>   # on the GPU machine
set -euo pipefail

mode=full
case "${1:-}" in
  "") ;;
  --dry-run) mode=dry ;;
  --smoke) mode=smoke ;;
  *) echo "usage: $0 [--dry-run | --smoke]" >&2; exit 2 ;;
esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
python="${PYTHON:-python}"

if [[ $mode == full ]]; then
  scan_args=(--lengths 1024,4096,16384 --repeats 5)
  unet_args=(--steps 10)
  attn_args=()
  pytest_marks="gpu or tpu"
  # Timeouts sum to 470 s (< 8 min) plus start-up; a step that hits one is recorded, not fatal.
  budget=(tests 120 scan 120 unet 170 attention 60)
else
  scan_args=(--quick --no-layer --lengths 64 --impls associative sequential --repeats 1)
  unet_args=(--presets digits_small --dtypes float32 --steps 1 --batch 4)
  attn_args=(--quick --impls xla reference --repeats 1)
  pytest_marks="gpu or tpu"
  budget=(tests 300 scan 300 unet 300 attention 300)  # a loaded 2-core CPU
fi
declare -A limit
for ((i = 0; i < ${#budget[@]}; i += 2)); do limit[${budget[i]}]=${budget[i + 1]}; done

device="$("$python" -c 'import jax, re; k = jax.devices()[0].device_kind.lower(); print(re.sub(r"[^a-z0-9]+", "_", k).strip("_"))')"
if [[ $mode == full ]]; then
  out="${ACCEL_OUT:-benchmarks/results/accelerator_$device}"
elif [[ $mode == smoke ]]; then
  out="${ACCEL_OUT:-$(mktemp -d)/accelerator_$device}"
else
  out="${ACCEL_OUT:-<not written in a dry run>}"
fi

steps=(tests scan unet attention)
command_for() {
  case "$1" in
    tests) echo "$python -m pytest -q -p no:cacheprovider -m '$pytest_marks' -rs" \
      "tests/test_pallas_scan.py tests/test_pallas_attention.py --junitxml=$out/tests.xml" ;;
    scan) echo "$python benchmarks/scan.py ${scan_args[*]} --out $out/scan.json" ;;
    unet) echo "$python benchmarks/unet_step.py ${unet_args[*]} --out $out/unet_step.json" ;;
    attention) echo "$python benchmarks/attention.py ${attn_args[*]} --out $out/attention.json" ;;
  esac
}

echo "accelerator check ($mode) on device '$device'; results in $out"
if [[ $mode == dry ]]; then
  for step in "${steps[@]}"; do
    echo "[$step, timeout ${limit[$step]}s] $(command_for "$step")"
  done
  "$python" -c 'import jax, flax, optax, pytest, numpy
import jaxml.models.unet, jaxml.models.s5, jaxml.ssm, jaxml.auto_impl, pallas_kernels.linear_scan
print("imports ok; backend:", jax.default_backend(), "devices:", jax.device_count())'
  for script in benchmarks/scan.py benchmarks/unet_step.py benchmarks/attention.py; do
    [[ -f $script ]] || { echo "missing $script" >&2; exit 1; }
  done
  echo "dry run ok"
  exit 0
fi

mkdir -p "$out"
summary="{\"device\": \"$device\", \"mode\": \"$mode\", \"steps\": {"
sep=""
status=0
for step in "${steps[@]}"; do
  cmd="$(command_for "$step")"
  echo "=== $step: $cmd"
  start=$SECONDS
  rc=0
  timeout "${limit[$step]}" bash -c "$cmd" 2>&1 | tee "$out/$step.log" || rc=${PIPESTATUS[0]}
  seconds=$((SECONDS - start))
  echo "=== $step: exit $rc after ${seconds}s"
  ((rc == 0)) || status=1
  summary+="$sep\"$step\": {\"exit_code\": $rc, \"seconds\": $seconds, \"command\": \"${cmd//\"/\\\"}\"}"
  sep=", "
done
summary+="}}"
echo "$summary" >"$out/summary.json"
echo "wrote $out/summary.json"
exit $status
