#!/usr/bin/env bash
# Delete a TPU VM slice, or the queued resource that holds it.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF2
Usage: $PROG [--name] NAME --zone ZONE [--queued [--qr-name QR]] [--async]

Delete the TPU VM NAME (gcloud compute tpus tpu-vm delete), or with --queued the
queued resource (gcloud compute tpus queued-resources delete --force, which deletes
its node too). No confirmation prompt (--quiet). The workdir in gs:// is kept.

  --name NAME    TPU name [env TPU_NAME]
  --zone ZONE    [env ZONE]
  --project P    [env PROJECT]
  --queued       delete the queued resource created by create.sh --queued
  --qr-name QR   queued resource name (default: the TPU name)
  --async        return without waiting for the deletion
  --dry-run      print the gcloud command instead of running it [env DRY_RUN=1]
  -h, --help     this help
EOF2
}

QUEUED=0
QR_NAME=
ASYNC=()
while (($#)); do
  if common_flag "$@"; then
    shift "$OPTSHIFT"
    continue
  fi
  case $1 in
    --qr-name | --qr-name=*)
      opt_value "$@"
      QR_NAME=$OPTVAL
      shift "$OPTSHIFT"
      ;;
    --queued) QUEUED=1 && shift ;;
    --async) ASYNC=(--async) && shift ;;
    -*) die "unknown option: $1 (see --help)" ;;
    *) positional_name "$1" && shift ;;
  esac
done

require_name_and_zone
[[ -z $QR_NAME || $QUEUED == 1 ]] || die "--qr-name needs --queued"
set_gcloud_flags
if ((QUEUED)); then
  run gcloud compute tpus queued-resources delete "${QR_NAME:-$TPU_NAME}" "${GCLOUD_FLAGS[@]}" \
    --force --quiet "${ASYNC[@]}"
else
  run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${GCLOUD_FLAGS[@]}" --quiet "${ASYNC[@]}"
fi
