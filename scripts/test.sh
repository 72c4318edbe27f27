#!/usr/bin/env bash
# Set up a virtual environment and run the test suite (lint included).
# Usage: bash scripts/test.sh [pytest args...]
# FULL_TEST=1 also runs the slow tests.
SDT_EXTRAS=test
source "$(dirname "$0")/_venv.sh"

# Optional accelerators: prebuilt torch-scatter / torch-sparse wheels, when a
# ../shared/wheels folder beside the clone has ones matching this torch/Python.
WHEELS=${SDT_SHARED:-../shared}/wheels
if compgen -G "$WHEELS/torch_s*-cp311-*.whl" >/dev/null &&
    "$VPY" -c 'import sys, torch; sys.exit(not (torch.__version__.startswith("2.13.0") and sys.version_info[:2] == (3, 11)))'; then
    echo "Installing optional accelerators from $WHEELS"
    "$VPY" -m pip install -q --disable-pip-version-check --no-deps "$WHEELS"/torch_s*-cp311-*.whl
else
    echo "No matching torch-scatter/torch-sparse wheels: SparseTensor tests will skip"
fi

"$VPY" -m ruff check .
"$VPY" -m ruff format --check .
"$VPY" -m pytest test -n 2 "$@"
