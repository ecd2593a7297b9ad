#!/usr/bin/env bash
# Stop the training processes on every worker of a TPU VM slice.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF2
Usage: $PROG [--name] NAME --zone ZONE [--grace SECONDS]

On every worker (--worker=all): SIGTERM to the training processes started by
launch.sh (the training loop finishes its step, writes a checkpoint and exits),
SIGKILL to any still running after --grace seconds, then remove
/tmp/libtpu_lockfile. The slice keeps running (and costing): delete.sh removes it.

  --name NAME        TPU name [env TPU_NAME]
  --zone ZONE        [env ZONE]
  --project P        [env PROJECT]
  --grace SECONDS    time to save and exit before SIGKILL (default 120; 0 kills at once)
  --dry-run          print the gcloud command instead of running it [env DRY_RUN=1]
  -h, --help         this help
EOF2
}

GRACE=120
while (($#)); do
  if common_flag "$@"; then
    shift "$OPTSHIFT"
    continue
  fi
  case $1 in
    --grace | --grace=*)
      opt_value "$@"
      GRACE=$OPTVAL
      shift "$OPTSHIFT"
      ;;
    -*) die "unknown option: $1 (see --help)" ;;
    *) positional_name "$1" && shift ;;
  esac
done

require_name_and_zone
[[ $GRACE =~ ^[0-9]+$ ]] || die "--grace takes a number of seconds, got '$GRACE'"
set_gcloud_flags
tpu_ssh all "$(stop_snippet "$GRACE"); echo \"\$(hostname): stopped\""
