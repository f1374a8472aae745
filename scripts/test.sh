#!/usr/bin/env bash
# Set up and run the whole test suite, twice: on the embedded defaults (SQLite + SQLite broker)
# and against PostgreSQL + Redis on 127.0.0.1 (started here if installed but down). Fails if
# either tier fails, or runs no test. UNLEARND_TEST_TIERS="embedded" runs only the first tier
# (for a machine without PostgreSQL/Redis; CI always runs both).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
tiers=${UNLEARND_TEST_TIERS:-"embedded postgres"}
echo "== lint (ruff) and types (mypy on the numerical core and the store)"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
mkdir -p .test-reports
for tier in $tiers; do
  echo "== tests, tier: $tier"
  if [ "$tier" = postgres ]; then
    ./scripts/services.sh
  fi
  rc=0
  UNLEARND_TEST_TIER=$tier .venv/bin/pytest -q --junitxml=".test-reports/$tier.xml" "$@" || rc=$?
  if [ $rc -ne 0 ]; then
    echo "tier $tier FAILED (pytest exit $rc; 5 means no test ran)" >&2
    exit $rc
  fi
  .venv/bin/python - "$tier" <<'PY'
import sys, xml.etree.ElementTree as ET
tier = sys.argv[1]
root = ET.parse(f".test-reports/{tier}.xml").getroot()
suite = root if root.tag == "testsuite" else root.find("testsuite")
tests, skipped = int(suite.get("tests")), int(suite.get("skipped"))
ran = tests - skipped
if ran <= 0:
    sys.exit(f"tier {tier}: no test ran")
print(f"tier {tier}: {ran} tests ran, {skipped} skipped")
PY
done
echo "all tiers passed: $tiers"
