#!/usr/bin/env bash
# Follow the training log of one worker (default 0) or of all workers.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF2
Usage: $PROG [--name] NAME --zone ZONE [--worker N|all] [--run-name RUN] [--lines N] [--no-follow]

tail -f ~/$REMOTE_LOG_DIR/RUN.log on a worker of the slice (the logs launch.sh
writes; RUN defaults to the most recently written log there). Process 0 (worker 0)
reports the metrics; the other workers' logs matter when something fails.

  --name NAME      TPU name [env TPU_NAME]
  --zone ZONE      [env ZONE]
  --project P      [env PROJECT]
  --worker N|all   which worker (default 0); "all" interleaves every worker's log
  --run-name RUN   the log's name (launch.sh's --run-name, default the workdir's last part)
  --lines N        start with the last N lines (default 100)
  --no-follow      print and exit instead of following
  --dry-run        print the gcloud command instead of running it [env DRY_RUN=1]
  -h, --help       this help
EOF2
}

WORKER=0
RUN_NAME=
LINES=100
FOLLOW=1
while (($#)); do
  if common_flag "$@"; then
    shift "$OPTSHIFT"
    continue
  fi
  case $1 in
    --worker | --worker=*)
      opt_value "$@"
      WORKER=$OPTVAL
      shift "$OPTSHIFT"
      ;;
    --run-name | --run-name=*)
      opt_value "$@"
      RUN_NAME=$OPTVAL
      shift "$OPTSHIFT"
      ;;
    --lines | --lines=*)
      opt_value "$@"
      LINES=$OPTVAL
      shift "$OPTSHIFT"
      ;;
    --no-follow) FOLLOW=0 && shift ;;
    -*) die "unknown option: $1 (see --help)" ;;
    *) positional_name "$1" && shift ;;
  esac
done

require_name_and_zone
[[ $WORKER =~ ^([0-9]+|all)$ ]] || die "--worker takes a worker number or 'all', got '$WORKER'"
[[ $LINES =~ ^[0-9]+$ ]] || die "--lines takes a number, got '$LINES'"
[[ -z $RUN_NAME || $RUN_NAME =~ ^[A-Za-z0-9._-]+$ ]] || die "bad --run-name '$RUN_NAME'"
set_gcloud_flags

if [[ -n $RUN_NAME ]]; then
  find_log="f=~/$REMOTE_LOG_DIR/$RUN_NAME.log"
else
  find_log="f=\$(ls -t ~/$REMOTE_LOG_DIR/*.log 2>/dev/null | head -n 1); [ -n \"\$f\" ] || { echo \"\$(hostname): no logs in ~/$REMOTE_LOG_DIR\" >&2; exit 1; }"
fi
follow=""
((FOLLOW)) && follow=" -F"
tpu_ssh "$WORKER" "$find_log; echo \"==> \$(hostname):\$f <==\"; tail -n $LINES$follow \"\$f\""
