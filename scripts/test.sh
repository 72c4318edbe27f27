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

# Each pytest run has a time limit, so that a hung run fails instead of
# holding the caller (the whole suite takes about 10 minutes on 2 cores);
# the script exits with the first failing run's status. For the Ray modules,
# pytest's status 5 (no test selected, e.g. under -k) is no failure.
rc=0
run_pytest() {
    local limit=$1 no_tests_ok=$2
    shift 2
    local status=0
    timeout -k 60 "$limit" "$VPY" -m pytest "$@" || status=$?
    if [ "$no_tests_ok" = yes ] && [ "$status" -eq 5 ]; then status=0; fi
    if [ "$rc" -eq 0 ]; then rc=$status; fi
}
run_pytest 2400 no test -n 2 -m 'not ray' "$@"
# The modules whose test process is a Ray driver run once the others are
# done, each in a fresh process: no Ray session starts twice in one process
# or beside another test's load.
for module in test/test_ray_cluster.py test/test_ray_engine.py; do
    run_pytest 900 yes "$module" -m ray "$@"
done
exit "$rc"
