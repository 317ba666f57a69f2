"""Parameter tables: a style is a tuple of :class:`Param` rows, each of which draws its value (from
the values drawn before it), checks an override and documents itself. Rows of a ``stage`` are drawn
in table order when the renderer asks for that stage, which fixes the random stream."""
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
    """A callable (a draw ``fn(p)`` or a check ``fn(name, value, p)``) with the text documenting it."""

    fn: Callable[..., Any]
    text: str

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def __str__(self) -> str:
        return self.text


def uniform(lo: float, hi: float) -> Rule:
    """Uniform draw in ``[lo, hi)``."""
    return Rule(lambda p: float(p.rng.uniform(lo, hi)), f"U({lo:g}, {hi:g})")


def log_uniform(lo: float, hi: float) -> Rule:
    """Draw uniform in ``log`` between ``lo`` and ``hi``."""
    return Rule(lambda p: float(math.exp(p.rng.uniform(math.log(lo), math.log(hi)))), f"logU({lo:g}, {hi:g})")


def const(value: Any) -> Rule:
    """Always ``value``."""
    return Rule(lambda p: value, repr(value))


def choice(values: Sequence[Any], probs: Sequence[float] | None = None) -> Rule:
    """One of ``values`` (with probabilities ``probs``, default equal)."""
    shown = ", ".join(f"{v} ({q:.2g})" for v, q in zip(values, probs or [1 / len(values)] * len(values)))
    return Rule(lambda p: p.rng.choice(list(values), p=probs), shown)


def maybe(p_zero: float, dist: Rule) -> Rule:
    """0 with probability ``p_zero``, else a draw of ``dist`` (drawn first either way)."""
    return Rule(lambda p: float(p.rng.choice([0.0, dist(p)], p=[p_zero, 1 - p_zero])),
                f"0 ({p_zero:g}) else {dist}")


def by(key: str, cases: Mapping[Any, Rule], default: Rule | None = None) -> Rule:
    """The distribution ``cases[value of key]`` (``default`` for other values)."""
    text = "; ".join([f"{k}: {v}" for k, v in cases.items()] + ([f"else {default}"] if default else []))
    return Rule(lambda p: cases.get(p.values[key], default)(p), f"by {key}: {text}")


_BOUNDS: dict[str, Callable[[Params], float]] = {"side/2": lambda p: min(p.shape) / 2,
                                                  "radius low": lambda p: p.values["radius_range"][0],
                                                  "radius high": lambda p: p.values["radius_range"][1]}


def number(lo: float | str, hi: float | str, integer: bool = False, none_ok: bool = False) -> Rule:
    """Override check: a number (int with ``integer``) in ``[lo, hi]``; str bounds are ``_BOUNDS`` keys."""
    def check(name: str, value: Any, p: Params) -> Any:
        if value is None and none_ok:
            return None
        low, high = (_BOUNDS[b](p) if isinstance(b, str) else b for b in (lo, hi))
        return (check_int if integer else check_float)(value, name, low, high, error=SyntheticError)

    lo_s, hi_s = (b if isinstance(b, str) else f"{b:g}" for b in (lo, hi))
    kind = "int" if integer else "number"
    return Rule(check, f"{kind} in [{lo_s}, {hi_s}]" + (" or None" if none_ok else ""))


def pair(lo: float, hi: str) -> Rule:
    """Override check: a ``(low, high)`` pair with ``lo <= low <= high <= hi``."""
    def check(name: str, value: Any, p: Params) -> tuple[float, float]:
        try:
            low, high = (float(x) for x in value)
        except (TypeError, ValueError):
            raise SyntheticError(f"{name} must be a (low, high) pair of numbers, got {value!r}") from None
        bound = number(lo, hi)
        if low > high:
            bound(f"{name} low <= high", math.nan, p)
        return bound(name, low, p), bound(name, high, p)

    return Rule(check, f"(low, high), {lo:g} <= low <= high <= {hi}")


def one_of(choices: Sequence[Any]) -> Rule:
    """Override check: one of ``choices``."""
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
        self.table, self.shape, self.rng = tuple(table), shape, rng
        self.overrides, self.values = dict(overrides), {}
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


def table(*rows: tuple) -> tuple[Param, ...]:
    """Rows ``(name, draw, check, doc[, stage])`` as :class:`Param`; a tuple check means :func:`number`."""
    return tuple(Param(name, draw, number(*check) if isinstance(check, tuple) else check, doc, *stage)
                 for name, draw, check, doc, *stage in rows)
