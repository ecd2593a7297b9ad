# shellcheck shell=bash disable=SC2034  # variables here are used by the scripts that source it
# Shared by the tpu_scripts/*.sh commands (sourced, never run).
#
# Environment defaults (a flag on the command line wins):
#   TPU_NAME, ZONE, PROJECT, ACCELERATOR_TYPE, RUNTIME_VERSION
#   DRY_RUN=1     print every command instead of running it (same as --dry-run)
#
# Dry-run lines are "+ " followed by the arguments, each quoted with printf %q, so
# shlex.split(line[2:]) in Python gives back exactly the argv that would run. Remote
# (--command=...) strings are kept on one line so %q never needs $'...' quoting.

TPU_NAME=${TPU_NAME:-}
ZONE=${ZONE:-}
PROJECT=${PROJECT:-}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-}
RUNTIME_VERSION=${RUNTIME_VERSION:-}
DRY_RUN=${DRY_RUN:-0}
PROG=$(basename "$0")

# Where the code and its virtual environment live on each worker (relative to $HOME).
REMOTE_DIR=jaxml
REMOTE_VENV=jaxml_venv
REMOTE_LOG_DIR=jaxml_logs

# Training processes started by launch.sh. Anchored at the start of the command line,
# so it matches the python process itself but never the remote shell whose own
# command line contains "python -m train." (an unanchored pkill -f would kill the
# very shell that is about to start the new run).
TRAIN_PATTERN='^([^ ]*/)?python[0-9.]* -m train[.]'

# One line on stderr, exit status 2 (bad or missing arguments).
die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 2
}

note() {
  printf '%s: %s\n' "$PROG" "$*" >&2
}

# run CMD ARGS...: run it, or with DRY_RUN=1 print "+ " and the %q-quoted argv.
run() {
  if [[ $DRY_RUN == 1 ]]; then
    local line="+" arg
    for arg in "$@"; do
      line+=" $(printf '%q' "$arg")"
    done
    printf '%s\n' "$line"
  else
    "$@"
  fi
}

# opt_value "$@": the value of the option in $1 ("--opt=value" or "--opt value").
# Sets OPTVAL and OPTSHIFT (how many arguments it used).
opt_value() {
  if [[ $1 == *=* ]]; then
    OPTVAL=${1#*=}
    OPTSHIFT=1
  else
    (($# >= 2)) || die "option $1 needs a value"
    OPTVAL=$2
    OPTSHIFT=2
  fi
}

# common_flag "$@": handles the options every script takes; returns 1 for others.
# Needs a usage function in the calling script. Sets OPTSHIFT.
common_flag() {
  OPTSHIFT=1
  case $1 in
    -h | --help)
      usage
      exit 0
      ;;
    --dry-run) DRY_RUN=1 ;;
    --name | --name=*)
      opt_value "$@"
      TPU_NAME=$OPTVAL
      ;;
    --zone | --zone=*)
      opt_value "$@"
      ZONE=$OPTVAL
      ;;
    --project | --project=*)
      opt_value "$@"
      PROJECT=$OPTVAL
      ;;
    *) return 1 ;;
  esac
}

# positional_name ARG: the TPU name may also be given as the one positional argument.
positional_name() {
  [[ -z ${NAME_FROM_ARGS:-} ]] || die "unexpected argument: $1 (the name is already $TPU_NAME)"
  NAME_FROM_ARGS=1
  TPU_NAME=$1
}

require_name_and_zone() {
  [[ -n $TPU_NAME ]] || die "missing TPU name: pass --name NAME (or set TPU_NAME)"
  [[ $TPU_NAME =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] ||
    die "bad TPU name '$TPU_NAME': lowercase letters, digits and '-', starting with a letter"
  [[ -n $ZONE ]] || die "missing zone: pass --zone ZONE (or set ZONE)"
}

# The --zone/--project flags every gcloud call gets, in the array GCLOUD_FLAGS.
set_gcloud_flags() {
  GCLOUD_FLAGS=(--zone="$ZONE")
  if [[ -n $PROJECT ]]; then
    GCLOUD_FLAGS+=(--project="$PROJECT")
  fi
}

# tpu_ssh WORKER REMOTE_COMMAND: run a one-line command on a worker (or "all").
tpu_ssh() {
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GCLOUD_FLAGS[@]}" --worker="$1" --command="$2"
}

# A one-line remote snippet that stops the training processes on a worker: SIGTERM
# (the training loop finishes its step, saves a checkpoint and exits), up to
# GRACE seconds to do so, then SIGKILL; then the TPU lock file of a killed process.
stop_snippet() {
  local grace=$1 pat="'$TRAIN_PATTERN'" # no single quote inside: safe to quote so
  printf '%s' "pkill -TERM -f $pat || true; i=0; while pgrep -f $pat >/dev/null && [ \$i -lt $grace ]; do sleep 1; i=\$((i+1)); done; pkill -KILL -f $pat || true; rm -f /tmp/libtpu_lockfile"
}
