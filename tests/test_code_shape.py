"""The design card's size rule, checked on the code itself: no function longer than 80 lines."""
from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "function_lengths.py"


def test_no_function_in_the_packages_is_longer_than_80_lines():
    spec = importlib.util.spec_from_file_location("function_lengths", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.long_functions(80) == []
    assert module.long_functions(20), "the scan found no functions at all: it looks in the wrong place"
