#!/usr/bin/env bash
# Install everything the tests need, lint, type-check, then run the whole test suite (slow tests included).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"` for the fast subset.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
.venv/bin/ruff check .
.venv/bin/mypy  # settings and files (mmphi/) in pyproject.toml's [tool.mypy]
.venv/bin/python -m pytest "$@"
