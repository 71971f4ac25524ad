#!/usr/bin/env bash
# The README's test command: set up .venv with the test and torch extras,
# then run the whole suite (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh test,torch,export,fast-eval
.venv/bin/python -m pytest "$@"
