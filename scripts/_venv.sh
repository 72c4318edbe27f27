# Sourced by the set-up scripts: creates ./.venv (Python 3.11) and installs the
# package with the extras given in $SDT_EXTRAS. torch is pinned here, before
# anything else can pull an unpinned (CUDA, several GB) build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install -q --disable-pip-version-check torch==2.13.0
SPEC=.
[ -n "${SDT_EXTRAS:-}" ] && SPEC=".[${SDT_EXTRAS}]"
"$VPY" -m pip install -q --disable-pip-version-check -e "$SPEC"
