#!/usr/bin/env bash
# Creates .venv with torch 2.13.0 (the local CPU wheel: installed first, so that no
# other torch request can pull CUDA builds) and lrkit with all extras. Safe to re-run.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
python3 -m venv .venv
pip=(.venv/bin/python -m pip -q --disable-pip-version-check)
"${pip[@]}" install torch==2.13.0
"${pip[@]}" install -e ".[dev]"
