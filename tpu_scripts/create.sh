#!/usr/bin/env bash
# Create a Cloud TPU VM (slice), directly or through a queued resource.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $PROG [--name] NAME --zone ZONE --accelerator-type TYPE [options] [-- GCLOUD_ARGS...]

Create a TPU VM slice with gcloud compute tpus tpu-vm create, or with --queued a
queued resource (gcloud compute tpus queued-resources create) that provisions the
node NAME when capacity is free.

  --name NAME               TPU (node) name [env TPU_NAME]
  --zone ZONE               e.g. us-central2-b (v4), europe-west4-b (v5e) [env ZONE]
  --project PROJECT         default: gcloud's configured project [env PROJECT]
  --accelerator-type TYPE   e.g. v4-32, v5litepod-16, v5p-32, v6e-16 [env ACCELERATOR_TYPE]
  --version VERSION         TPU software (runtime) version [env RUNTIME_VERSION];
                            default from the type: v2/v3/v4 tpu-ubuntu2204-base,
                            v5e (v5litepod) v2-alpha-tpuv5-lite, v5p v2-alpha-tpuv5,
                            v6e v2-alpha-tpuv6e
  --spot                    Spot VMs (cheap, preemptible at any time)
  --preemptible             legacy preemptible TPU (not with --queued)
  --queued                  create a queued resource instead (waits for capacity)
  --qr-name QR              queued resource name (default: the TPU name)
  --dry-run                 print the gcloud command instead of running it [env DRY_RUN=1]
  -h, --help                this help
  -- GCLOUD_ARGS...         passed on to gcloud (e.g. --reserved, --network=...)
EOF
}

SPOT=0
PREEMPTIBLE=0
QUEUED=0
QR_NAME=
EXTRA=()
while (($#)); do
  if common_flag "$@"; then
    shift "$OPTSHIFT"
    continue
  fi
  case $1 in
    --accelerator-type | --accelerator-type=* | --type | --type=*)
      opt_value "$@"
      ACCELERATOR_TYPE=$OPTVAL
      shift "$OPTSHIFT"
      ;;
    --version | --version=* | --runtime-version | --runtime-version=*)
      opt_value "$@"
      RUNTIME_VERSION=$OPTVAL
      shift "$OPTSHIFT"
      ;;
    --qr-name | --qr-name=*)
      opt_value "$@"
      QR_NAME=$OPTVAL
      shift "$OPTSHIFT"
      ;;
    --spot) SPOT=1 && shift ;;
    --preemptible) PREEMPTIBLE=1 && shift ;;
    --queued) QUEUED=1 && shift ;;
    --)
      shift
      EXTRA=("$@")
      break
      ;;
    -*) die "unknown option: $1 (see --help)" ;;
    *) positional_name "$1" && shift ;;
  esac
done

require_name_and_zone
[[ -n $ACCELERATOR_TYPE ]] || die "missing --accelerator-type (e.g. v4-32, v5litepod-16)"
((SPOT + PREEMPTIBLE < 2)) || die "--spot and --preemptible exclude each other"
((!QUEUED || !PREEMPTIBLE)) || die "queued resources take --spot, not --preemptible"
[[ -z $QR_NAME || $QUEUED == 1 ]] || die "--qr-name needs --queued"

if [[ -z $RUNTIME_VERSION ]]; then
  case $ACCELERATOR_TYPE in
    v2-* | v3-* | v4-*) RUNTIME_VERSION=tpu-ubuntu2204-base ;;
    v5litepod-* | v5e-*) RUNTIME_VERSION=v2-alpha-tpuv5-lite ;;
    v5p-*) RUNTIME_VERSION=v2-alpha-tpuv5 ;;
    v6e-*) RUNTIME_VERSION=v2-alpha-tpuv6e ;;
    *) die "no default runtime version for accelerator type '$ACCELERATOR_TYPE'; pass --version" ;;
  esac
fi

set_gcloud_flags
if ((QUEUED)); then
  cmd=(gcloud compute tpus queued-resources create "${QR_NAME:-$TPU_NAME}"
    --node-id="$TPU_NAME" "${GCLOUD_FLAGS[@]}"
    --accelerator-type="$ACCELERATOR_TYPE" --runtime-version="$RUNTIME_VERSION")
else
  cmd=(gcloud compute tpus tpu-vm create "$TPU_NAME" "${GCLOUD_FLAGS[@]}"
    --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION")
fi
((SPOT)) && cmd+=(--spot)
((PREEMPTIBLE)) && cmd+=(--preemptible)
run "${cmd[@]}" "${EXTRA[@]}"

if ((QUEUED)) && [[ $DRY_RUN != 1 ]]; then
  note "queued; the node exists once the state is ACTIVE:" \
    "gcloud compute tpus queued-resources describe ${QR_NAME:-$TPU_NAME} --zone=$ZONE"
fi
