#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs lint and the test suite that CI runs.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
scripts/setup.sh
.venv/bin/ruff check src tests
.venv/bin/ruff format --check src tests
.venv/bin/python -m pytest -m "not slow" -q -p no:cacheprovider "$@"
