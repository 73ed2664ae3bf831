#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the quick benchmark suite with its report.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
scripts/setup.sh
source scripts/env.sh
.venv/bin/lrkit bench quick --out benchmarks/results/quick "$@"
