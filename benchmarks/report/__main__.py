"""``python -m benchmarks.report``: see :mod:`benchmarks.report`."""
import sys

from benchmarks.report.cli import main

sys.exit(main())
