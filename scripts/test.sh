#!/usr/bin/env bash
# Install everything (apt packages, .venv, the package with its test extras) and run the whole
# test suite under a virtual X server. Extra arguments go to pytest, e.g. `-k plugin` or `-m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# Two pytest-xdist workers, one test file at a time each (one torch thread each, tests/conftest.py;
# loadfile, not loadgroup: loadgroup ignores xdist_group marks with pytest 9.2, pytest-xdist#1386);
# SEGDIFF_TEST_WORKERS=0 runs everything in one process. pytest-xvfb starts one Xvfb per worker
# for the napari tests; QT_QPA_PLATFORM stays unset so the canvas renders.
workers=${SEGDIFF_TEST_WORKERS:-2}
parallel=()
[ "$workers" = 0 ] || parallel=(-n "$workers" --dist loadfile)
exec .venv/bin/python -m pytest "${parallel[@]}" "$@"
