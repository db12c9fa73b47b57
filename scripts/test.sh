#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite. This is README's second command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 -m pytest -q -p no:cacheprovider tests "$@"
