"""What a stage's params may be: a frozen dataclass whose fields each carry a rule.

    @dataclass(frozen=True)
    class PosterParams:
        width: int = param(1280, integer(16, 16384), "poster width in pixels")

A field's annotation is its type, its default is what the stage uses when the job does not
say, and its rule says which values are accepted (a range, a list of choices, a pattern).
Params come from preset files anyone may hand to ``--preset``, so a DAG is checked against
these rules when it is built, before anything is queued. A rule raises ValueError with what
it expected; the caller adds where (the preset, the stage, the key).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """A check on one value: ``rule(value)`` raises ValueError(expects) when it is not
    accepted. ``expects`` says in words what is, for error messages and the catalog."""

    expects: str
    test: Callable[[Any], None]

    def __call__(self, value: Any) -> None:
        self.test(value)


def integer(lo: int, hi: int) -> Rule:
    expects = f"an integer in {lo}..{hi}"

    def test(v: Any) -> None:
        # bool is an int to Python, never to a preset author.
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(expects)

    return Rule(expects, test)


def number(lo: float, hi: float) -> Rule:
    expects = f"a number in {lo}..{hi}"

    def test(v: Any) -> None:
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise ValueError(expects)

    return Rule(expects, test)


def _boolean(v: Any) -> None:
    if not isinstance(v, bool):
        raise ValueError("true or false")


boolean = Rule("true or false", _boolean)


def one_of(*choices: str) -> Rule:
    expects = f"one of {', '.join(choices)}"

    def test(v: Any) -> None:
        if v not in choices:
            raise ValueError(expects)

    return Rule(expects, test)


def matching(pattern: re.Pattern[str], expects: str) -> Rule:
    def test(v: Any) -> None:
        if not isinstance(v, str) or not pattern.fullmatch(v):
            raise ValueError(expects)

    return Rule(expects, test)


def list_of(item: Rule, *, min_len: int = 1, max_len: int = 16) -> Rule:
    what = f"a list of {min_len} to {max_len} items"

    def test(v: Any) -> None:
        # A tuple is a declared default; JSON and TOML give lists.
        if not isinstance(v, list | tuple) or not min_len <= len(v) <= max_len:
            raise ValueError(what)
        for x in v:
            try:
                item(x)
            except ValueError as exc:
                raise ValueError(f"{what}, each {exc}") from None

    return Rule(f"{what}, each {item.expects}", test)


def table_of(rules: Mapping[str, Rule]) -> Rule:
    """A table whose keys are among ``rules`` (a table of formats, a rung)."""
    what = f"a table with keys among {', '.join(rules)}"

    def test(v: Any) -> None:
        if not isinstance(v, dict):
            raise ValueError(what)
        for key, value in v.items():
            if key not in rules:
                raise ValueError(f"{what} (not {key!r})")
            try:
                rules[key](value)
            except ValueError as exc:
                raise ValueError(f"{key} {exc}") from None

    return Rule(what, test)


LABEL = re.compile(r"[A-Za-z0-9_-]{1,32}")
BITRATE = re.compile(r"[0-9]+(\.[0-9]+)?[kKmM]?")
# Labels end up in file names (rungs, formats): no separator, no dot, nothing to escape.
label = matching(LABEL, "1 to 32 characters among A-Z a-z 0-9 _ -")
bitrate = matching(BITRATE, "a bitrate such as 128k or 1.5M")
MAX_DIMENSION = 16384


def _line(v: Any) -> None:
    if not isinstance(v, str) or len(v) > 100 or not v.isprintable():
        raise ValueError("a line of at most 100 characters")


line = Rule("a line of at most 100 characters", _line)


def param(default: Any, rule: Rule, doc: str = "") -> Any:
    """A params field: its default, the rule every given value must pass, what it does."""
    return dataclasses.field(default=default, metadata={"rule": rule, "doc": doc})


@dataclass(frozen=True)
class NoParams:
    """A stage that takes nothing beyond what the submitter sets (input, out_dir...)."""


@dataclass(frozen=True)
class ParamSpec:
    """One key a stage accepts, as the catalog shows it."""

    key: str
    type: str  # the field's annotation, e.g. "int", "tuple[int, ...]"
    default: Any  # None: the stage decides (an environment limit, no metadata kept)
    expects: str  # the rule in words: "an integer in 16..16384"
    doc: str
    rule: Rule

    def check(self, value: Any) -> None:
        self.rule(value)


def schema_of(params: type) -> tuple[ParamSpec, ...]:
    """The keys of a params dataclass. Every field must declare a rule, and every default
    that is not None must pass it: a declaration that breaks its own rule fails at import."""
    if not dataclasses.is_dataclass(params):
        raise TypeError(f"{params!r}: stage params must be a dataclass")
    specs: list[ParamSpec] = []
    for f in dataclasses.fields(params):
        rule = f.metadata.get("rule")
        if not isinstance(rule, Rule):
            raise TypeError(f"{params.__name__}.{f.name}: declare it with param(default, rule)")
        if f.default is dataclasses.MISSING:
            raise TypeError(f"{params.__name__}.{f.name}: a param needs a default")
        if f.default is not None:
            try:
                rule(f.default)
            except ValueError as exc:
                raise TypeError(f"{params.__name__}.{f.name}: default is not {exc}") from None
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        specs.append(
            ParamSpec(f.name, annotation, f.default, rule.expects, f.metadata["doc"], rule)
        )
    return tuple(specs)
