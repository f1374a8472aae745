#!/usr/bin/env bash
# Create .venv and install unlearnd with its development tools. Idempotent and quick when
# nothing changed (a stamp records the hash of pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.unlearnd-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing dependencies (torch is pinned to 2.13.0)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch first and exactly (see pyproject.toml): the CPU wheel on the development machines; on a
  # plain Linux x86_64 machine PyPI's 2.13.0 wheel is the CUDA build, a download of several GB.
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  echo "$want" > "$stamp"
fi
