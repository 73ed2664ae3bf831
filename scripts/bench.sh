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
out_given=0
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --out) out="${args[i + 1]:-}"; out_given=1 ;;
    --out=*) out="${args[i]#--out=}"; out_given=1 ;;
  esac
done
echo "scripts/bench.sh: writing to $out/ (interrupted? scripts/bench.sh --out $out resumes)"
# --out once only, so that results.json records the command as it was meant
if ((out_given)); then
  .venv/bin/lrkit bench quick "$@"
else
  .venv/bin/lrkit bench quick --out "$out" "$@"
fi
