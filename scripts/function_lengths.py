#!/usr/bin/env python
"""List the functions of segdiff_core and napari_segdiff longer than a limit (default 80 lines).

Usage::

    python scripts/function_lengths.py [--limit 80]

Prints one line per long function (``lines path:line name``, longest first) and a count; exits 1
when there is any. The design card allows no function longer than about 80 lines.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("segdiff_core", "napari_segdiff")


def long_functions(limit: int = 80) -> list[tuple[int, str]]:
    """``(lines, "path:line name")`` of every function longer than ``limit`` lines, longest first."""
    rows = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > limit:
                        rows.append((lines, f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"))
    return sorted(rows, reverse=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=80)
    args = ap.parse_args(argv)
    rows = long_functions(args.limit)
    for lines, where in rows:
        print(lines, where)
    print(f"{len(rows)} function(s) longer than {args.limit} lines in {', '.join(PACKAGES)}")
    return 1 if rows else 0


if __name__ == "__main__":
    sys.exit(main())
