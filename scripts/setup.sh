#!/usr/bin/env bash
# Set up mmphi on a fresh machine: system packages, a virtualenv in .venv, PyTorch (the CPU
# build when there is no NVIDIA GPU), then mmphi itself. Safe to re-run: it skips what is done.
#
#   bash scripts/setup.sh          # what `mmphi demo`, chat, app and serve need
#   bash scripts/setup.sh --test   # plus the test tools (pytest, ruff, mypy, openai, playwright, chromium)
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_TESTS=0
[[ "${1:-}" == "--test" ]] && WITH_TESTS=1
PYTHON="${PYTHON:-python3}"

apt_install() {  # apt_install CMD PACKAGE: install PACKAGE when CMD is missing (needs root)
  command -v "$1" >/dev/null 2>&1 && return 0
  if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null; then
    echo "setup: installing $2 (apt)"
    apt-get install -y -q "$2" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "$2" >/dev/null; }
  else
    echo "setup: warning: '$1' is missing; install the '$2' package (spoken questions / browser tests need it)" >&2
  fi
}

apt_install espeak-ng espeak-ng
[[ $WITH_TESTS == 1 ]] && apt_install chromium chromium

[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
PIP=".venv/bin/pip"

if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found: installing PyTorch with CUDA"
    $PIP install -q "torch>=2.4"
  else
    # A bare `torch` would pull a multi-GB CUDA build. Take the CPU build: a local wheel when the
    # machine has one (pip's find-links), else PyTorch's CPU index.
    echo "setup: no GPU: installing the CPU build of PyTorch"
    $PIP install -q "torch==2.13.0+cpu" 2>/dev/null \
      || $PIP install -q torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi

EXTRAS="app"
[[ $WITH_TESTS == 1 ]] && EXTRAS="app,test"
echo "setup: installing mmphi[$EXTRAS]"
$PIP install -q -e ".[$EXTRAS]"
echo "setup: done (.venv/bin/mmphi)"
