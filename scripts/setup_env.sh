#!/usr/bin/env bash
# Creates ./.venv once and installs orienmask-tf into it (editable), with the
# extras given as arguments, e.g. `scripts/setup_env.sh test,torch`.
# Re-running is cheap: it reinstalls only when pyproject.toml/setup.py change.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$(cat pyproject.toml setup.py | sha256sum | cut -c1-12)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  spec="."
  [ -n "$extras" ] && spec=".[${extras}]"
  # torch is only needed to read official .pth checkpoints; 2.13 is the CPU
  # build this project is tested with.
  pins=()
  [[ ",$extras," == *",torch,"* ]] && pins=("torch==2.13.*")
  .venv/bin/python -m pip install --quiet -e "$spec" "${pins[@]}"
  touch "$stamp"
fi
