#!/usr/bin/env bash
# Install everything and open napari with the SegDiff annotator and a synthetic nuclei image.
# Without a display (ssh, CI) it runs under xvfb-run and saves a screenshot instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  exec .venv/bin/python scripts/demo.py "$@"
else
  echo ">> no display: running the demo under xvfb-run and saving demo.png"
  exec xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/demo.py --screenshot demo.png "$@"
fi
