#!/usr/bin/env bash
# Put the code on every worker of a TPU VM slice and install it into a virtualenv.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $PROG [--name] NAME --zone ZONE [--git-ref REF [--repo URL]] [--python CMD]

On every worker (--worker=all) of the slice:
  1. the code goes to ~/$REMOTE_DIR: by default the committed tree (git archive of
     HEAD, copied with gcloud compute tpus tpu-vm scp; uncommitted changes are NOT
     included); with --git-ref, a fresh git clone of --repo checked out at REF;
  2. a virtualenv ~/$REMOTE_VENV is created (Python >= 3.11; the TPU images ship
     3.10, so python3.11 is installed with apt when needed) and
     pip install ".[tpu]" installs jaxml with jax[tpu] into it.
Run it again after each commit you want on the workers.

  --name NAME        TPU name [env TPU_NAME]
  --zone ZONE        [env ZONE]
  --project PROJECT  [env PROJECT]
  --git-ref REF      branch, tag or commit to check out on the workers
  --repo URL         repository to clone (default: this checkout's origin); the
                     workers need read access to it
  --python CMD       Python to build the virtualenv with (default: python3 if it
                     is >= 3.11, else python3.11)
  --dry-run          print the commands instead of running them [env DRY_RUN=1]
  -h, --help         this help
EOF
}

GIT_REF=
REPO_URL=
PYTHON=
while (($#)); do
  if common_flag "$@"; then
    shift "$OPTSHIFT"
    continue
  fi
  case $1 in
    --git-ref | --git-ref=*)
      opt_value "$@"
      GIT_REF=$OPTVAL
      shift "$OPTSHIFT"
      ;;
    --repo | --repo=*)
      opt_value "$@"
      REPO_URL=$OPTVAL
      shift "$OPTSHIFT"
      ;;
    --python | --python=*)
      opt_value "$@"
      PYTHON=$OPTVAL
      shift "$OPTSHIFT"
      ;;
    -*) die "unknown option: $1 (see --help)" ;;
    *) positional_name "$1" && shift ;;
  esac
done

require_name_and_zone
[[ -z $REPO_URL || -n $GIT_REF ]] || die "--repo needs --git-ref REF"
[[ -z $PYTHON || $PYTHON =~ ^python3(\.[0-9]+)?$ ]] ||
  die "--python takes a command name like python3.12, got '$PYTHON'"
ROOT=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel 2>/dev/null) ||
  die "tpu_scripts/ is not inside a git checkout"
if [[ -n $GIT_REF && -z $REPO_URL ]]; then
  REPO_URL=$(git -C "$ROOT" remote get-url origin 2>/dev/null) ||
    die "--git-ref needs --repo URL (this checkout has no origin remote)"
fi
set_gcloud_flags

q() { printf '%q' "$1"; }

# The remote steps, joined into one line (see common.sh).
steps=("set -e" "cd ~")
if [[ -n $GIT_REF ]]; then
  steps+=("rm -rf ~/$REMOTE_DIR"
    "git clone --quiet $(q "$REPO_URL") ~/$REMOTE_DIR"
    "git -C ~/$REMOTE_DIR checkout --quiet --force $(q "$GIT_REF")")
else
  steps+=("rm -rf ~/$REMOTE_DIR"
    "mkdir -p ~/$REMOTE_DIR"
    "tar -xzf ~/$REMOTE_DIR.tar.gz -C ~/$REMOTE_DIR"
    "rm -f ~/$REMOTE_DIR.tar.gz")
fi
apt="sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600"
steps+=("PY=$PYTHON"
  "if [ -z \"\$PY\" ]; then if python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then PY=python3; else PY=python3.11; fi; fi"
  "if ! \"\$PY\" -c 'import ensurepip' 2>/dev/null; then $apt update -qq && $apt install -y -qq \"\$PY\" \"\$PY-venv\"; fi"
  "[ -x ~/$REMOTE_VENV/bin/python ] || \"\$PY\" -m venv ~/$REMOTE_VENV"
  ". ~/$REMOTE_VENV/bin/activate"
  "python -m pip install --quiet --upgrade pip"
  "cd ~/$REMOTE_DIR"
  "python -m pip install --quiet '.[tpu]'"
  "echo \"\$(hostname): jaxml \$(git rev-parse --short HEAD 2>/dev/null || echo archive) installed, \$(python --version), jax \$(python -c 'import jax; print(jax.__version__)')\"")
remote=$(printf '%s; ' "${steps[@]}")
remote=${remote%; }

if [[ -z $GIT_REF ]]; then
  if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no) ]]; then
    note "warning: uncommitted changes are not copied (git archive HEAD)"
  fi
  tarball=${TMPDIR:-/tmp}/jaxml-$TPU_NAME.tar.gz
  [[ $DRY_RUN == 1 ]] || trap 'rm -f "$tarball"' EXIT
  run git -C "$ROOT" archive --format=tar.gz -o "$tarball" HEAD
  run gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME:$REMOTE_DIR.tar.gz" \
    "${GCLOUD_FLAGS[@]}" --worker=all
fi
tpu_ssh all "$remote"
