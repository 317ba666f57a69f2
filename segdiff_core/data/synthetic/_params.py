"""Tile parameters declared as tables: one row per parameter draws it, checks overrides, documents it.

A style's table is a tuple of :class:`Param` rows. A row's ``draw`` is a :class:`Rule` built by
the small distribution functions below (called with the :class:`Params` being drawn, so it can
read the values drawn before it), its ``check`` a :class:`Rule` that validates a user override,
and its ``stage`` says when the renderer draws it (rows of a stage are drawn in table order,
which fixes the random stream).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from segdiff_core.validation import check_choice, check_float, check_int


class SyntheticError(ValueError):
    """Bad arguments to the synthetic generator (unknown style, bad size or override)."""


@dataclass(frozen=True)
class Rule:
    """A callable with the text that documents it."""

    fn: Callable[..., Any]
    text: str

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def __str__(self) -> str:
        return self.text


def loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """One draw uniform in ``log`` between ``lo`` and ``hi``."""
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def uniform(lo: float, hi: float) -> Rule:
    return Rule(lambda p: float(p.rng.uniform(lo, hi)), f"U({lo:g}, {hi:g})")


def log_uniform(lo: float, hi: float) -> Rule:
    return Rule(lambda p: loguniform(p.rng, lo, hi), f"logU({lo:g}, {hi:g})")


def const(value: Any) -> Rule:
    return Rule(lambda p: value, repr(value))


def choice(values: Sequence[Any], probs: Sequence[float] | None = None) -> Rule:
    shown = probs or [1 / len(values)] * len(values)
    return Rule(lambda p: p.rng.choice(list(values), p=probs), ", ".join(f"{v} ({q:.2g})" for v, q in zip(values, shown)))


def maybe(p_zero: float, dist: Rule) -> Rule:
    """0 with probability ``p_zero``, else a draw of ``dist`` (drawn first either way)."""
    return Rule(lambda p: float(p.rng.choice([0.0, dist(p)], p=[p_zero, 1 - p_zero])), f"0 ({p_zero:g}) else {dist}")


def by(key: str, cases: Mapping[Any, Rule], default: Rule | None = None) -> Rule:
    """The distribution ``cases[value of key]`` (``default`` for other values)."""
    text = "; ".join([f"{k}: {v}" for k, v in cases.items()] + ([f"else {default}"] if default else []))
    return Rule(lambda p: cases.get(p.values[key], default)(p), f"by {key}: {text}")


_BOUNDS: dict[str, Callable[[Params], float]] = {
    "side/2": lambda p: min(p.shape) / 2,
    "radius low": lambda p: p.values["radius_range"][0],
    "radius high": lambda p: p.values["radius_range"][1],
}


def number(lo: float | str, hi: float | str, integer: bool = False, none_ok: bool = False) -> Rule:
    """Override check: a number (an int with ``integer``) in ``[lo, hi]``; a str bound is one of
    ``_BOUNDS``, a quantity of the tile."""
    def check(name: str, value: Any, p: Params) -> Any:
        if value is None and none_ok:
            return None
        low, high = (_BOUNDS[b](p) if isinstance(b, str) else b for b in (lo, hi))
        return (check_int if integer else check_float)(value, name, low, high, error=SyntheticError)

    text = f"{'int' if integer else 'number'} in [{_fmt(lo)}, {_fmt(hi)}]"
    return Rule(check, text + (" or None" if none_ok else ""))


def _fmt(bound: float | str) -> str:
    return bound if isinstance(bound, str) else f"{bound:g}"


def pair(lo: float, hi: float | str) -> Rule:
    """Override check: a ``(low, high)`` pair with ``lo <= low <= high <= hi``."""
    def check(name: str, value: Any, p: Params) -> tuple[float, float]:
        try:
            low, high = (float(x) for x in value)
        except (TypeError, ValueError):
            raise SyntheticError(f"{name} must be a (low, high) pair of numbers, got {value!r}") from None
        bound = number(lo, hi)
        return (bound(name, low, p), bound(name, high, p)) if low <= high else bound(f"{name} low <= high", math.nan, p)

    return Rule(check, f"(low, high), {_fmt(lo)} <= low <= high <= {_fmt(hi)}")


def one_of(choices: Sequence[Any]) -> Rule:
    return Rule(lambda name, v, p: check_choice(v, name, choices, error=SyntheticError),
                "one of " + ", ".join(map(str, choices)))


@dataclass(frozen=True)
class Param:
    """One row of a style's table: name, draw distribution, override check, meaning, stage."""

    name: str
    draw: Rule
    check: Rule
    doc: str
    stage: str = "tile"


def with_draws(table: Sequence[Param], **draws: Rule) -> tuple[Param, ...]:
    """``table`` with the draw distributions of the named rows replaced (order kept)."""
    return tuple(replace(row, draw=draws.get(row.name, row.draw)) for row in table)


class Params:
    """The parameters of one tile, drawn stage by stage from its style's table.

    An override replaces the draw of its row (after the row's check); the values drawn so far
    are ``values`` and also attributes (``p.coverage``).
    """

    def __init__(self, style: str, table: Sequence[Param], shape: tuple[int, int],
                 rng: np.random.Generator, overrides: Mapping[str, Any]):
        self.table, self.shape, self.rng, self.overrides, self.values = tuple(table), shape, rng, dict(overrides), {}
        names = sorted(row.name for row in self.table)
        unknown = sorted(set(self.overrides) - set(names))
        if unknown:
            raise SyntheticError(f"unknown override(s) {unknown} for style {style!r}; valid names are: "
                                 f"{', '.join(names)}")

    def draw(self, stage: str = "tile") -> None:
        """Draw (or take from the overrides) every row of ``stage``, in table order."""
        for row in (r for r in self.table if r.stage == stage):
            given = row.name in self.overrides
            value = row.check(row.name, self.overrides[row.name], self) if given else row.draw(self)
            self.values[row.name] = value.item() if isinstance(value, np.generic) else value

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None


def markdown_table(table: Sequence[Param]) -> str:
    """The table as Markdown: parameter, default distribution, accepted override, meaning."""
    rows = ["| parameter | drawn from | an override must be | meaning |", "|---|---|---|---|"]
    return "\n".join(rows + [f"| `{r.name}` | {r.draw} | {r.check} | {r.doc} |" for r in table])
