#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the quick benchmark suite with its report, into a fresh
# folder runs/quick-<date>-<time>/ (ignored by git), so the committed results stay as they are.
# --out DIR writes to DIR instead; the same --out DIR resumes an interrupted run. Committing
# results is a separate step (README, "Results").
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
scripts/setup.sh
# The quick suite trains on Fashion-MNIST. Where lrkit finds no copy (README, "Data"), install
# Debian's package (it puts the files in /usr/share/datasets/fashion-mnist), as root or
# through sudo without a password; otherwise lrkit's error below says how to get them.
has_fashion_mnist() {
  .venv/bin/python -c "from lrkit.data.images import IDX_FILES
from lrkit.data.root import find_data_dir
find_data_dir('fashion-mnist', IDX_FILES, folder_names=('fashion-mnist',))" 2>/dev/null
}
if ! has_fashion_mnist && command -v apt-get >/dev/null; then
  sudo=()
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  fi
  if [ "$(id -u)" = 0 ] || [ ${#sudo[@]} -gt 0 ]; then
    echo "scripts/bench.sh: no Fashion-MNIST found; installing Debian's dataset-fashion-mnist"
    "${sudo[@]}" apt-get install -y -q dataset-fashion-mnist >/dev/null ||
      { "${sudo[@]}" apt-get update -q >/dev/null &&
        "${sudo[@]}" apt-get install -y -q dataset-fashion-mnist >/dev/null; } ||
      echo "scripts/bench.sh: apt-get could not install dataset-fashion-mnist" >&2
  fi
fi
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
