"""A parser for the InfluxQL subset the dashboards use, and a check of its names against the schema.

No InfluxQL parser is published for Python, so this one covers what ``dashboards/`` needs and refuses
the rest (a dashboard query outside the subset fails its test rather than passing unchecked):

    SELECT expr [AS name] {, expr [AS name]} FROM source {, source}
        [WHERE condition] [GROUP BY time(duration) | tag | * {, …}] [fill(none|null|previous|linear|0)]
        [ORDER BY time [ASC|DESC]] [LIMIT n]
    SHOW TAG VALUES [FROM source {, source}] WITH KEY = tag [WHERE condition]

- ``expr``: numbers, field references (``"value"`` or ``value``), ``*``, function calls
  (``mean("value")``, ``percentile("value", 95)``), ``+ - * /`` and parentheses;
- ``source``: a measurement (quoted or bare) or a regex ``/^(a|b|c)$/`` over measurement names;
- ``condition``: ``AND``/``OR`` of comparisons ``ref op literal`` (``= != <> < <= > >= =~ !~``) where a
  literal is a string ``'…'``, a number, a regex ``/…/``, ``now() [- duration]`` or an epoch time
  ``1700000000000ms``; ``time`` compares with times only.

Grafana macros must be substituted first (:func:`substitute`), as Grafana does before sending the
query. :func:`check` then resolves every measurement, field and tag against ``gateway.schema_names``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from gateway import schema_names

__all__ = ["InfluxQLError", "Query", "check", "parse", "substitute"]


class InfluxQLError(ValueError):
    """The query is outside the supported subset, or names something the schema does not have."""


# --------------------------------------------------------------------------------------------------
# lexer

_KEYWORDS = {
    "select", "from", "where", "group", "by", "fill", "order", "limit", "as", "and", "or",
    "show", "tag", "values", "with", "key", "asc", "desc",
}  # fmt: skip
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<duration>\d+(?:ns|us|µs|u|ms|s|m|h|d|w)\b)
  | (?P<number>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<qident>"(?:[^"\\]|\\.)*")
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<op>=~|!~|!=|<>|<=|>=|=|<|>|\+|-|\*|/|\(|\)|,)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE,
)
_REGEX = re.compile(r"/((?:[^/\\\n]|\\.)*)/")
_REGEX_AFTER = {"=~", "!~", "from", ","}


@dataclass(frozen=True)
class Tok:
    kind: str  # duration number qident string op ident keyword regex
    text: str
    value: str


def tokenize(q: str) -> list[Tok]:
    out: list[Tok] = []
    pos = 0
    while pos < len(q):
        prev = out[-1] if out else None
        prev_key = (prev.value.lower() if prev.kind == "keyword" else prev.text) if prev else ""
        if q[pos] == "/" and prev_key in _REGEX_AFTER and (prev_key != "," or _in_from(out)):
            m = _REGEX.match(q, pos)
            if not m:
                raise InfluxQLError(f"unterminated regex at {pos}: {q[pos : pos + 20]!r}")
            out.append(Tok("regex", m.group(0), m.group(1)))
            pos = m.end()
            continue
        m = _TOKEN.match(q, pos)
        if not m:
            raise InfluxQLError(f"unexpected character at {pos}: {q[pos : pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        text = m.group(0)
        if kind == "ws":
            continue
        if kind == "qident":
            out.append(Tok("ident", text, text[1:-1].replace('\\"', '"')))
        elif kind == "string":
            out.append(Tok("string", text, text[1:-1].replace("\\'", "'")))
        elif kind == "ident" and text.lower() in _KEYWORDS:
            out.append(Tok("keyword", text, text.lower()))
        else:
            out.append(Tok(kind, text, text))
    return out


def _in_from(toks: list[Tok]) -> bool:
    """True when the last clause keyword seen is FROM (a ``,`` there separates sources)."""
    for t in reversed(toks):
        if t.kind == "keyword" and t.value in {"select", "from", "where", "group", "with"}:
            return t.value == "from"
    return False


# --------------------------------------------------------------------------------------------------
# AST


@dataclass
class Source:
    name: str | None = None
    regex: str | None = None


@dataclass
class Comparison:
    ref: str
    op: str
    kind: str  # string number regex time
    literal: str


@dataclass
class Query:
    statement: str  # select | show_tag_values
    sources: list[Source] = field(default_factory=list)
    field_refs: list[str] = field(default_factory=list)
    """Field references in the SELECT expressions."""
    aggregates: list[tuple[str, str]] = field(default_factory=list)
    """(function, field) pairs."""
    comparisons: list[Comparison] = field(default_factory=list)
    group_tags: list[str] = field(default_factory=list)
    group_time: str | None = None
    tag_key: str | None = None


_FUNCTIONS = {
    "mean", "median", "count", "sum", "min", "max", "first", "last", "percentile", "stddev", "spread",
    "mode", "distinct", "integral", "derivative", "non_negative_derivative", "difference", "moving_average",
}  # fmt: skip
_NUMERIC_FUNCTIONS = _FUNCTIONS - {"count", "first", "last", "distinct", "mode"}
_FILL = {"none", "null", "previous", "linear"}


class _Parser:
    def __init__(self, q: str) -> None:
        self.toks = tokenize(q)
        self.i = 0

    def peek(self, offset: int = 0) -> Tok | None:
        j = self.i + offset
        return self.toks[j] if j < len(self.toks) else None

    def text_at(self, offset: int = 0) -> str:
        t = self.peek(offset)
        return t.text if t is not None else ""

    def kind_at(self, offset: int = 0) -> str:
        t = self.peek(offset)
        return t.kind if t is not None else ""

    def at(self, *values: str) -> bool:
        t = self.peek()
        return t is not None and t.kind in {"keyword", "op"} and t.value.lower() in values

    def take(self, *values: str) -> Tok:
        t = self.peek()
        if t is None or (values and not self.at(*values)):
            raise InfluxQLError(f"expected {' or '.join(values) or 'a token'}, got {t.text if t else 'end of query'!r}")
        self.i += 1
        return t

    def take_kind(self, kind: str) -> Tok:
        t = self.peek()
        if t is None or t.kind != kind:
            raise InfluxQLError(f"expected {kind}, got {t.text if t else 'end of query'!r}")
        self.i += 1
        return t

    # -- statements
    def parse(self) -> Query:
        if self.at("select"):
            q = self.select()
        elif self.at("show"):
            q = self.show_tag_values()
        else:
            raise InfluxQLError("only SELECT and SHOW TAG VALUES are supported")
        if self.peek() is not None:
            raise InfluxQLError(f"unexpected {self.text_at()!r} after the statement")
        return q

    def select(self) -> Query:
        q = Query("select")
        self.take("select")
        while True:
            self.expr(q)
            if self.at("as"):
                self.take("as")
                self.take_kind("ident")
            if not self.at(","):
                break
            self.take(",")
        self.take("from")
        q.sources = self.sources()
        if self.at("where"):
            self.take("where")
            self.condition(q)
        if self.at("group"):
            self.take("group")
            self.take("by")
            while True:
                t = self.peek()
                if t is not None and t.kind == "ident" and t.value == "time" and self.text_at(1) == "(":
                    self.i += 2
                    q.group_time = self.take_kind("duration").value
                    if self.at(","):
                        self.take(",")
                        self.take_kind("duration")
                    self.take(")")
                elif self.at("*"):
                    self.take("*")
                    q.group_tags.append("*")
                else:
                    q.group_tags.append(self.take_kind("ident").value)
                if not self.at(","):
                    break
                self.take(",")
        if self.at("fill"):
            self.take("fill")
            self.take("(")
            t = self.take()
            if not (t.value.lower() in _FILL or t.kind == "number"):
                raise InfluxQLError(f"bad fill option {t.text!r}")
            self.take(")")
        if self.at("order"):
            self.take("order")
            self.take("by")
            if self.take_kind("ident").value != "time":
                raise InfluxQLError("ORDER BY supports time only")
            if self.at("asc", "desc"):
                self.take()
        if self.at("limit"):
            self.take("limit")
            self.take_kind("number")
        return q

    def show_tag_values(self) -> Query:
        q = Query("show_tag_values")
        self.take("show")
        self.take("tag")
        self.take("values")
        if self.at("from"):
            self.take("from")
            q.sources = self.sources()
        self.take("with")
        self.take("key")
        self.take("=")
        q.tag_key = self.take_kind("ident").value
        if self.at("where"):
            self.take("where")
            self.condition(q)
        return q

    def sources(self) -> list[Source]:
        out = []
        while True:
            t = self.peek()
            if t is not None and t.kind == "regex":
                self.i += 1
                out.append(Source(regex=t.value))
            else:
                out.append(Source(name=self.take_kind("ident").value))
            if not self.at(","):
                return out
            self.take(",")

    # -- expressions (SELECT list)
    def expr(self, q: Query) -> None:
        self.term(q)
        while self.at("+", "-", "*", "/"):
            self.take()
            self.term(q)

    def term(self, q: Query) -> None:
        t = self.take()
        if t.kind == "number":
            return
        if t.kind == "op" and t.value == "(":
            self.expr(q)
            self.take(")")
            return
        if t.kind == "op" and t.value == "-":
            self.term(q)
            return
        if t.kind == "op" and t.value == "*":
            q.field_refs.append("*")
            return
        if t.kind == "ident" and self.at("("):
            name = t.value.lower()
            if name not in _FUNCTIONS:
                raise InfluxQLError(f"unsupported function {t.value!r}")
            self.take("(")
            arg = self.take_kind("ident").value
            q.field_refs.append(arg)
            q.aggregates.append((name, arg))
            while self.at(","):
                self.take(",")
                a = self.take()
                if a.kind not in {"number", "duration"}:
                    raise InfluxQLError(f"{name}(): extra arguments must be numbers or durations, got {a.text!r}")
            self.take(")")
            return
        if t.kind == "ident":
            q.field_refs.append(t.value)
            return
        raise InfluxQLError(f"unexpected {t.text!r} in a SELECT expression")

    # -- conditions (WHERE)
    def condition(self, q: Query) -> None:
        self.predicate(q)
        while self.at("and", "or"):
            self.take()
            self.predicate(q)

    def predicate(self, q: Query) -> None:
        if self.at("("):
            self.take("(")
            self.condition(q)
            self.take(")")
            return
        ref = self.take_kind("ident").value
        op = self.take("=~", "!~", "=", "!=", "<>", "<", "<=", ">", ">=").value
        t = self.take()
        if t.kind == "ident" and t.value.lower() == "now" and self.at("("):
            self.take("(")
            self.take(")")
            if self.at("-", "+"):
                self.take()
                self.take_kind("duration")
            kind, literal = "time", "now()"
        elif t.kind == "duration":
            kind, literal = "time", t.value
        elif t.kind in {"string", "number", "regex"}:
            kind, literal = t.kind, t.value
        elif t.kind == "op" and t.value == "-" and self.kind_at() == "number":
            kind, literal = "number", "-" + self.take().value
        else:
            raise InfluxQLError(f"unsupported literal {t.text!r} after {ref} {op}")
        if op in {"=~", "!~"} and kind != "regex":
            raise InfluxQLError(f"{op} needs a regex")
        q.comparisons.append(Comparison(ref, op, kind, literal))


def parse(query: str) -> Query:
    """Parse one statement of the supported subset (:class:`InfluxQLError` otherwise)."""
    return _Parser(query).parse()


# --------------------------------------------------------------------------------------------------
# Grafana macros


def substitute(query: str, *, start_ms: int, end_ms: int, interval: str, variables: dict[str, str]) -> str:
    """Replace Grafana's InfluxQL macros and template variables as Grafana does before sending."""
    q = query.replace("$timeFilter", f"time >= {start_ms}ms and time <= {end_ms}ms")
    q = q.replace("$__interval", interval)
    for name in sorted(variables, key=len, reverse=True):
        q = q.replace(f"${{{name}}}", variables[name]).replace(f"${name}", variables[name])
    if re.search(r"\$(\{|[A-Za-z_])", q):
        raise InfluxQLError(f"unsubstituted macro or variable in {q!r}")
    return q


# --------------------------------------------------------------------------------------------------
# schema check

_MEASUREMENT_REGEX = re.compile(r"\^\(([a-z0-9_|]+)\)\$")


def measurements(q: Query) -> list[str]:
    """The measurements a query reads; a regex source must be ``^(a|b|…)$`` over schema names."""
    out: list[str] = []
    for s in q.sources:
        if s.name is not None:
            names = [s.name]
        else:
            m = _MEASUREMENT_REGEX.fullmatch(s.regex or "")
            if not m:
                raise InfluxQLError(f"measurement regex /{s.regex}/ is not of the form /^(a|b|…)$/")
            names = m.group(1).split("|")
        for n in names:
            if n not in schema_names.MEASUREMENTS:
                raise InfluxQLError(f"unknown measurement {n!r} (not in gateway/vocabulary.py)")
        out.extend(names)
    if not out and q.statement == "select":
        raise InfluxQLError("SELECT without a measurement")
    return out


def _iter_refs(q: Query) -> Iterator[str]:
    yield from (r for r in q.field_refs if r != "*")


def check(query: str) -> Query:
    """Parse ``query`` and resolve its names against ``gateway.schema_names``; return the parsed query.

    - every measurement exists; a field reference is a field of **every** measurement read, never a tag;
    - numeric functions (``mean``, ``percentile`` …) apply only to numeric fields;
    - a comparison names ``time`` (with a time), a tag (with a string or regex; a ``unit`` string must be
      one of each measurement's units) or a field (numbers only for numeric fields);
    - ``GROUP BY`` names tags; ``SHOW TAG VALUES … WITH KEY`` names a tag.
    """
    q = parse(query)
    names = measurements(q)
    all_tags = {t for m in names for t in schema_names.tags(m)} if names else {"device", "hz", "unit"}

    def common_tags() -> set[str]:
        return set.intersection(*(set(schema_names.tags(m)) for m in names)) if names else all_tags

    def field_type(ref: str) -> str:
        types = set()
        for m in names:
            f = schema_names.fields(m)
            if ref not in f:
                what = "a tag" if ref in schema_names.tags(m) else "not a field"
                raise InfluxQLError(f"{ref!r} is {what} of measurement {m!r} (fields: {', '.join(f)})")
            types.add(f[ref])
        return "numeric" if types <= {"float", "integer"} else "/".join(sorted(types))

    for ref in _iter_refs(q):
        field_type(ref)
    for fn, ref in q.aggregates:
        if fn in _NUMERIC_FUNCTIONS and field_type(ref) != "numeric":
            raise InfluxQLError(f"{fn}({ref!r}) needs a numeric field")
    for c in q.comparisons:
        if c.ref == "time":
            if c.kind != "time":
                raise InfluxQLError(f"time compared with a {c.kind}")
            continue
        if c.ref in all_tags:
            if c.ref not in common_tags():
                raise InfluxQLError(f"tag {c.ref!r} is not a tag of every measurement read")
            if c.kind not in {"string", "regex"}:
                raise InfluxQLError(f"tag {c.ref!r} compared with a {c.kind} (tags are strings)")
            if c.ref == "unit" and c.kind == "string":
                for m in names:
                    if c.literal not in schema_names.units(m):
                        raise InfluxQLError(f"unit {c.literal!r} is not a unit of {m!r}")
            continue
        t = field_type(c.ref)
        if c.kind in {"number"} and t != "numeric":
            raise InfluxQLError(f"field {c.ref!r} ({t}) compared with a number")
        if c.kind == "time":
            raise InfluxQLError(f"field {c.ref!r} compared with a time")
    for tag in q.group_tags:
        if tag != "*" and tag not in common_tags():
            raise InfluxQLError(f"GROUP BY {tag!r}: not a tag of every measurement read")
    if q.tag_key is not None and q.tag_key not in common_tags():
        raise InfluxQLError(f"SHOW TAG VALUES WITH KEY = {q.tag_key!r}: not a tag")
    return q
