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
  "$venv/bin/python" -m pip install -q -U pip >/dev/null 2>&1 || true
fi
stamp="$venv/.splitserve-installed"
want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # torch first, pinned: the CPU wheel of 2.13.0 (an unpinned torch pulls a CUDA build).
  log="$venv/install.log"
  echo "installing splitserve and its dependencies into $venv (log: $log) ..." >&2
  if ! { "$venv/bin/python" -m pip install -q "torch==2.13.0" &&
         "$venv/bin/python" -m pip install -q -e "$root[dev]" "torch==2.13.0"; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "install failed; see $log" >&2
    exit 1
  fi
  "$venv/bin/python" -c "import torch, splitserve" # fail here, loudly, if the install did not work
  echo "$want" > "$stamp"
fi
