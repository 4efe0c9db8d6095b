#!/usr/bin/env bash
# The main job on a built-in default: builds the demo model once (cached), starts a local
# 1-prefill/1-decode cluster on it, streams a few requests through the OpenAI API, prints
# a short report, and stops everything. Extra arguments go to `splitserve demo`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/venv.sh
exec "$root/.venv/bin/splitserve" demo "$@"
