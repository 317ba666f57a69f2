#!/usr/bin/env bash
# Install everything (apt packages, .venv, the package with its test extras) and run the whole
# test suite under a virtual X server. Extra arguments go to pytest, e.g. `-k plugin` or `-m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# pytest-xvfb starts Xvfb for the napari tests; QT_QPA_PLATFORM stays unset so the canvas renders.
exec .venv/bin/python -m pytest "$@"
