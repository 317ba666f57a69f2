"""segdiff_core.validation: the shared argument checks of the library and its command lines."""
from __future__ import annotations

import argparse

import pytest

from segdiff_core.validation import check_int, int_at_least


def test_int_at_least_is_an_argparse_type_that_names_the_bound(capsys) -> None:
    p = argparse.ArgumentParser(prog="tool")
    p.add_argument("--tile", type=int_at_least(1))
    p.add_argument("--halo", type=int_at_least(0))
    assert vars(p.parse_args(["--tile", "7", "--halo", "0"])) == {"tile": 7, "halo": 0}
    for argv, said in ((["--tile", "0"], "argument --tile: expected an integer >= 1, got 0"),
                       (["--halo", "-1"], "argument --halo: expected an integer >= 0, got -1"),
                       (["--tile", "2.5"], "argument --tile: expected an integer, got '2.5'")):
        with pytest.raises(SystemExit) as exc:
            p.parse_args(argv)
        assert exc.value.code == 2 and said in capsys.readouterr().err


def test_check_int_refuses_bools_floats_and_out_of_range_values() -> None:
    assert check_int(3, "n", 1, 5) == 3
    for bad in (True, 2.0, 0, 6, "3"):
        with pytest.raises(ValueError, match="n must be an int in"):
            check_int(bad, "n", 1, 5)
