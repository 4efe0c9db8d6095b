#!/usr/bin/env bash
# Creates (or refreshes) the repo-local virtual environment .venv.
# Sourced by scripts/run.sh and scripts/test.sh; safe to run again: it only
# reinstalls when pyproject.toml changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  for c in python3.11 python3.12 python3.10 python3; do
    if command -v "$c" >/dev/null 2>&1; then py="$c"; break; fi
  done
fi
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q -U pip 2>&1 | grep -v "is ignored" || true
fi
stamp="$venv/.splitserve-installed"
want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # torch first, pinned: the CPU wheel of 2.13.0 (an unpinned torch pulls a CUDA build).
  # (the grep drops pip's noise about local mirrors this machine does not have)
  "$venv/bin/python" -m pip install -q "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
  "$venv/bin/python" -m pip install -q -e "$root[dev]" "torch==2.13.0" 2>&1 \
    | grep -v -e "is ignored" -e BuildBackendWarning || true
  "$venv/bin/python" -c "import torch, splitserve" # fail here, loudly, if the install did not work
  echo "$want" > "$stamp"
fi
