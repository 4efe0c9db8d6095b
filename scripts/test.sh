#!/usr/bin/env bash
# The whole test suite: lint, type check, tests. CI runs exactly this.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/venv.sh
py="$root/.venv/bin/python"
"$py" -m ruff check splitserve tests benchmarks
"$py" -m mypy splitserve benchmarks
"$py" -m pytest -q -p no:cacheprovider "$@"
