#!/usr/bin/env bash
# Set up and run unlearnd in embedded mode: SQLite, an SQLite-backed Celery broker, artifacts in
# $UNLEARND_DATA_DIR (default ./var), the API on $UNLEARND_HOST:$UNLEARND_PORT (127.0.0.1:8000)
# and one worker. Prints the bootstrap admin key on first start.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/unlearnd run "$@"
