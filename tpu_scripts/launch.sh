#!/usr/bin/env bash
# Start a training run on every worker of a TPU VM slice (one process per worker).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $PROG [--name] NAME --zone ZONE --workdir gs://BUCKET/PATH [options] -- python -m train.ENTRY [ARGS...]

On every worker (--worker=all), in ~/$REMOTE_DIR with ~/$REMOTE_VENV active:
  1. stop any training process still running there (SIGTERM, which saves a
     checkpoint, then SIGKILL after --grace seconds) and remove /tmp/libtpu_lockfile;
  2. start the command with nohup in the background, with --workdir=WORKDIR
     appended, output appended to ~/$REMOTE_LOG_DIR/RUN_NAME.log on that worker.
The processes find each other by themselves (jax.distributed.initialize; the
worker list comes from the TPU VM metadata). A workdir with checkpoints is resumed,
so relaunching with the same --workdir (e.g. after a preemption) continues the run.

  --name NAME            TPU name [env TPU_NAME]
  --zone ZONE            [env ZONE]
  --project PROJECT      [env PROJECT]
  --workdir DIR          checkpoints and metrics; must be gs://... so all workers
                         share it (passed through verbatim)
  --allow-local-workdir  accept a local path (each worker then writes its own copy:
                         only sensible on a single-host slice such as v4-8)
  --run-name NAME        log file name (default: the last part of the workdir)
  --env KEY=VALUE        export this on the workers (repeatable), e.g.
                         --env JAX_LOG_COMPILES=1
  --grace SECONDS        how long a running process gets to save and exit (default 120)
  --dry-run              print the gcloud command instead of running it [env DRY_RUN=1]
  -h, --help             this help

Example:
  $PROG my-v4 --zone us-central2-b --workdir gs://my-bucket/runs/pfgm -- \\
    python -m train.diffusion --config=train/configs/diffusion_digits.py
EOF
}

WORKDIR=
ALLOW_LOCAL=0
RUN_NAME=
GRACE=120
ENVS=()
CMD=()
while (($#)); do
  if common_flag "$@"; then
    shift "$OPTSHIFT"
    continue
  fi
  case $1 in
    --workdir | --workdir=*)
      opt_value "$@"
      WORKDIR=$OPTVAL
      shift "$OPTSHIFT"
      ;;
    --run-name | --run-name=*)
      opt_value "$@"
      RUN_NAME=$OPTVAL
      shift "$OPTSHIFT"
      ;;
    --env | --env=*)
      opt_value "$@"
      [[ $OPTVAL =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env takes KEY=VALUE, got '$OPTVAL'"
      ENVS+=("$OPTVAL")
      shift "$OPTSHIFT"
      ;;
    --grace | --grace=*)
      opt_value "$@"
      GRACE=$OPTVAL
      shift "$OPTSHIFT"
      ;;
    --allow-local-workdir) ALLOW_LOCAL=1 && shift ;;
    --)
      shift
      CMD=("$@")
      break
      ;;
    -*) die "unknown option: $1 (see --help)" ;;
    *) positional_name "$1" && shift ;;
  esac
done

require_name_and_zone
((${#CMD[@]})) || die "missing training command after --, e.g. -- python -m train.diffusion --config=..."
for arg in "${CMD[@]}"; do
  [[ $arg != --workdir && $arg != --workdir=* ]] ||
    die "give the workdir to $PROG (--workdir), not to the training command"
done
[[ -n $WORKDIR ]] || die "missing --workdir (a gs://bucket/path all workers share)"
if [[ $WORKDIR != gs://?* ]] && ((!ALLOW_LOCAL)); then
  die "workdir '$WORKDIR' is not gs://...: on a multi-host slice each worker would write its own checkpoints (pass --allow-local-workdir to use it anyway)"
fi
[[ $GRACE =~ ^[0-9]+$ ]] || die "--grace takes a number of seconds, got '$GRACE'"
if [[ -z $RUN_NAME ]]; then
  RUN_NAME=${WORKDIR%/}
  RUN_NAME=${RUN_NAME##*/}
fi
[[ $RUN_NAME =~ ^[A-Za-z0-9._-]+$ && $RUN_NAME != . && $RUN_NAME != .. ]] ||
  die "cannot name the log after '$RUN_NAME': pass --run-name NAME (letters, digits, . _ -)"
set_gcloud_flags

# shellcheck disable=SC2088  # the tilde is expanded by the remote shell
log="~/$REMOTE_LOG_DIR/$RUN_NAME.log"
printf -v train '%q ' "${CMD[@]}" "--workdir=$WORKDIR"
train=${train% }
exports=""
if ((${#ENVS[@]})); then
  printf -v exports '%q ' "${ENVS[@]}"
  exports="export ${exports% }; "
fi

# Multi-host: jax.distributed needs process 0's address, the process count and this
# worker's index. jaxml takes them from JAXML_* variables; here they are read from the
# TPU VM metadata (what JAX's own GCE TPU detection reads), on slices of > 1 worker.
md="curl -sf --connect-timeout 5 --max-time 10 -H 'Metadata-Flavor: Google' http://metadata.google.internal/computeMetadata/v1/instance/attributes"
distributed="eps=\$($md/worker-network-endpoints || true); wid=\$($md/agent-worker-number || true); n=\$(printf '%s' \"\$eps\" | awk -F, '{print NF}'); if [ \"\${n:-0}\" -gt 1 ] && [ -n \"\$wid\" ]; then first=\${eps%%,*}; export JAXML_COORDINATOR_ADDRESS=\"\${first##*:}:8476\" JAXML_NUM_PROCESSES=\"\$n\" JAXML_PROCESS_ID=\"\$wid\"; fi"

remote="set -e; cd ~/$REMOTE_DIR; . ~/$REMOTE_VENV/bin/activate; mkdir -p ~/$REMOTE_LOG_DIR; $(stop_snippet "$GRACE"); $distributed; ${exports}echo \"=== \$(date -u '+%F %T') \$(hostname) launch: \"$(printf '%q' "$train") >> $log; nohup $train >> $log 2>&1 < /dev/null & echo \"\$(hostname): started pid \$!, log $log\""

tpu_ssh all "$remote"
if [[ $DRY_RUN != 1 ]]; then
  note "follow it with: $(dirname "$0")/logs.sh $TPU_NAME --zone $ZONE --run-name $RUN_NAME"
fi
