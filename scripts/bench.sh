#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the quick benchmark suite with its report, into a fresh
# folder runs/quick-<date>-<time>/ (ignored by git), so the committed results stay as they are.
# --out DIR writes to DIR instead; the same --out DIR resumes an interrupted run. Committing
# results is a separate step (README, "Results").
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
scripts/setup.sh
out="runs/quick-$(date +%Y%m%d-%H%M%S)"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --out) out="${args[i + 1]:-}" ;;
    --out=*) out="${args[i]#--out=}" ;;
  esac
done
echo "scripts/bench.sh: writing to $out/ (interrupted? scripts/bench.sh --out $out resumes)"
.venv/bin/lrkit bench quick --out "$out" "$@"
