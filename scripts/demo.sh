#!/usr/bin/env bash
# Set up a virtual environment and run the main job: cluster the bundled,
# self-generated demo faces and print the metrics.
# Usage: bash scripts/demo.sh [sdt demo options...]
SDT_EXTRAS=
source "$(dirname "$0")/_venv.sh"
.venv/bin/sdt demo "$@"
