"""Output formatting for the CLI: docker's `--format` (a subset of Go's text/template), the
`table` directive with tab-aligned columns, and docker's human sizes and times.

Supported template language:
  text and actions `{{ … }}` with trim markers `{{-` / `-}}` and comments `{{/* … */}}`;
  fields `.A.B`, `.`, `$`, variables `$x := …` / `$x = …`, parenthesised pipelines, pipes `|`;
  literals: "strings", `raw strings`, numbers, true, false, nil;
  control: if / else if / else, range (with `$i, $e :=`, else), with (else), end;
  functions: json, join, split, lower, upper, title, pad, truncate, printf, print, println,
  index, len, slice, and, or, not, eq, ne, lt, le, gt, ge.
Anything else (define, template, block, unknown functions) is refused with a clear error.
"""

from __future__ import annotations

import json as _json
import math
import re
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any, Callable

from sampan.units import human_duration

__all__ = [
    "FormatError",
    "Row",
    "Template",
    "bytes_size",
    "go_time_string",
    "human_duration",
    "human_size",
    "parse_time",
    "render",
    "render_list",
    "short_id",
    "tabulate",
    "time_ago",
]


class FormatError(Exception):
    """A template that does not parse or cannot be executed on the data."""


class _Missing:
    """A map key that is not there: Go prints it as `<no value>`."""

    def __repr__(self) -> str:
        return "<no value>"

    def __bool__(self) -> bool:
        return False


MISSING = _Missing()


class Row:
    """A record shown by a list command: fields are values or zero-argument callables. Unknown
    fields are an error (like docker's typed formatter contexts), not `<no value>`."""

    def __init__(self, kind: str, fields: dict[str, Any]):
        self._kind = kind
        self._fields = fields

    def get(self, name: str) -> Any:
        if name not in self._fields:
            raise FormatError(f"can't evaluate field {name} in type {self._kind}")
        v = self._fields[name]
        return v() if callable(v) else v

    def as_dict(self) -> dict[str, Any]:
        return {k: self.get(k) for k in self._fields}


# --------------------------------------------------------------------------- lexing


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\\n]|\\.)+')
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<pipe>\|)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<num>[+-]?(?:0[xX][0-9a-fA-F_]+|(?:\d[\d_]*)?\.?\d[\d_]*(?:[eE][+-]?\d+)?))
  | (?P<var>\$[A-Za-z0-9_]*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  """,
    re.VERBOSE,
)
_CHAIN = re.compile(r"(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def _lex_action(src: str, line: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if not m:
            raise FormatError(f"template: :{line}: unexpected {src[pos]!r} in command")
        kind = m.lastgroup or ""
        text = m.group()
        pos = m.end()
        if kind == "ws":
            continue
        # a field chain glued to a closing parenthesis or variable: (…).Name, $x.Name
        if kind in ("rparen", "var") and pos < len(src):
            c = _CHAIN.match(src, pos)
            if c:
                out.append((kind, text))
                out.append(("chain", c.group()))
                pos = c.end()
                continue
        out.append((kind, text))
    return out


# --------------------------------------------------------------------------- parsing


class _Node:
    __slots__ = ()


class _Text(_Node):
    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


class _Pipeline(_Node):
    __slots__ = ("assign", "cmds", "decl", "line")

    def __init__(self, decl: list[str], assign: bool, cmds: list[list[Any]], line: int):
        self.decl = decl
        self.assign = assign
        self.cmds = cmds
        self.line = line


class _Action(_Node):
    __slots__ = ("pipe",)

    def __init__(self, pipe: _Pipeline):
        self.pipe = pipe


class _Branch(_Node):
    __slots__ = ("body", "kind", "orelse", "pipe")

    def __init__(self, kind: str, pipe: _Pipeline, body: list, orelse: list | None):
        self.kind = kind
        self.pipe = pipe
        self.body = body
        self.orelse = orelse


# operand kinds inside a command
_FIELD, _VAR, _LIT, _FUNC, _SUB = "field", "var", "lit", "func", "sub"

_UNSUPPORTED = {"define", "template", "block", "break", "continue"}


def _unquote(tok: str) -> str:
    if tok.startswith("`"):
        return tok[1:-1]
    try:
        return _json.loads(tok)
    except ValueError:
        return tok[1:-1].encode("raw_unicode_escape").decode("unicode_escape")


def _number(tok: str) -> Any:
    t = tok.replace("_", "")
    try:
        if t.lower().startswith(("0x", "+0x", "-0x")):
            return int(t, 16)
        if re.fullmatch(r"[+-]?\d+", t):
            return int(t)
        return float(t)
    except ValueError:
        raise FormatError(f"template: bad number syntax: {tok!r}") from None


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.items = self._split(text)
        self.pos = 0

    # split into ("text", s, line) and ("action", s, line), applying trim markers
    @staticmethod
    def _split(text: str) -> list[tuple[str, str, int]]:
        items: list[tuple[str, str, int]] = []
        pos = 0
        while True:
            start = text.find("{{", pos)
            if start < 0:
                items.append(("text", text[pos:], text.count("\n", 0, pos) + 1))
                break
            chunk = text[pos:start]
            inner_start = start + 2
            if text.startswith("- ", inner_start) or text.startswith("-\t", inner_start) or \
                    text.startswith("-\n", inner_start):
                chunk = chunk.rstrip()
                inner_start += 1
            items.append(("text", chunk, text.count("\n", 0, pos) + 1))
            line = text.count("\n", 0, start) + 1
            lead = text[inner_start:]
            comment = lead.lstrip(" \t\n").startswith("/*")
            if comment:
                cend = text.find("*/", inner_start)
                if cend < 0:
                    raise FormatError(f"template: :{line}: unclosed comment")
                end = text.find("}}", cend + 2)
            else:
                end = _find_close(text, inner_start)
            if end < 0:
                raise FormatError(f"template: :{line}: unclosed action")
            inner = text[inner_start:end]
            pos = end + 2
            if inner.endswith((" -", "\t-", "\n-")):
                inner = inner[:-1]
                m = re.match(r"\s*", text[pos:])
                pos += m.end() if m else 0
            if comment:
                continue
            items.append(("action", inner, line))
        return [i for i in items if not (i[0] == "text" and i[1] == "")]

    def parse(self) -> list:
        body, end = self._list(())
        if end is not None:
            raise FormatError(f"template: :{end[1]}: unexpected {{{{{end[0]}}}}}")
        return body

    def _list(self, stops: tuple[str, ...]) -> tuple[list, tuple[str, int, str] | None]:
        nodes: list = []
        while self.pos < len(self.items):
            kind, s, line = self.items[self.pos]
            self.pos += 1
            if kind == "text":
                nodes.append(_Text(s))
                continue
            stripped = s.strip()
            word = stripped.split(None, 1)[0] if stripped else ""
            rest = stripped[len(word):].strip()
            if word in ("end", "else"):
                if word not in stops and not (word == "else" and "else" in stops):
                    raise FormatError(f"template: :{line}: unexpected {{{{{word}}}}}")
                return nodes, (word, line, rest)
            if word in ("if", "range", "with"):
                nodes.append(self._branch(word, rest, line))
                continue
            if word in _UNSUPPORTED:
                raise FormatError(
                    f"template: :{line}: {{{{{word}}}}} is not supported by sampan's --format "
                    "(supported: fields, if, range, with, and the functions json, join, lower, "
                    "upper, printf, index, …)")
            if not stripped:
                raise FormatError(f"template: :{line}: missing value for command")
            nodes.append(_Action(self._pipeline(stripped, line)))
        if stops:
            raise FormatError("template: unexpected EOF (missing {{end}})")
        return nodes, None

    def _branch(self, kind: str, rest: str, line: int) -> _Branch:
        if not rest:
            raise FormatError(f"template: :{line}: missing value for {kind}")
        pipe = self._pipeline(rest, line)
        body, end = self._list(("end", "else"))
        orelse: list | None = None
        assert end is not None
        if end[0] == "else":
            after = end[2]
            if after:
                # else if … / else with … : a nested branch that shares our {{end}}
                w = after.split(None, 1)[0]
                if w not in ("if", "with"):
                    raise FormatError(f"template: :{end[1]}: unexpected {{{{else {after}}}}}")
                orelse = [self._branch(w, after[len(w):].strip(), end[1])]
                return _Branch(kind, pipe, body, orelse)
            orelse, end2 = self._list(("end",))
            if end2 is None or end2[0] != "end":
                raise FormatError("template: unexpected EOF (missing {{end}})")
        return _Branch(kind, pipe, body, orelse)

    def _pipeline(self, src: str, line: int) -> _Pipeline:
        toks = _lex_action(src, line)
        decl: list[str] = []
        assign = False
        # declarations: $x := …, $i, $e := …, $x = …
        i = 0
        names = []
        while i < len(toks) and toks[i][0] == "var":
            names.append(toks[i][1])
            if i + 1 < len(toks) and toks[i + 1][0] == "comma":
                i += 2
                continue
            break
        if names and i + 1 < len(toks) and toks[i + 1][0] in ("declare", "assign"):
            decl = names
            assign = toks[i + 1][0] == "assign"
            toks = toks[i + 2:]
        cmds, rest = self._commands(toks, line)
        if rest:
            raise FormatError(f"template: :{line}: unexpected {rest[0][1]!r} in operand")
        if not cmds:
            raise FormatError(f"template: :{line}: missing value for command")
        return _Pipeline(decl, assign, cmds, line)

    def _commands(self, toks: list, line: int) -> tuple[list[list[Any]], list]:
        cmds: list[list[Any]] = []
        cur: list[Any] = []
        while toks:
            kind, text = toks[0]
            if kind == "rparen":
                break
            toks = toks[1:]
            if kind == "pipe":
                if not cur:
                    raise FormatError(f"template: :{line}: missing command before '|'")
                cmds.append(cur)
                cur = []
                continue
            if kind == "lparen":
                sub, toks = self._commands(toks, line)
                if not toks or toks[0][0] != "rparen":
                    raise FormatError(f"template: :{line}: unclosed left paren")
                toks = toks[1:]
                chain: list[str] = []
                if toks and toks[0][0] == "chain":
                    chain = toks[0][1].split(".")[1:]
                    toks = toks[1:]
                cur.append((_SUB, _Pipeline([], False, sub, line), chain))
            elif kind == "field":
                cur.append((_FIELD, [] if text == "." else text.split(".")[1:]))
            elif kind == "var":
                chain = []
                if toks and toks[0][0] == "chain":
                    chain = toks[0][1].split(".")[1:]
                    toks = toks[1:]
                cur.append((_VAR, text, chain))
            elif kind in ("str", "raw"):
                cur.append((_LIT, _unquote(text)))
            elif kind == "char":
                cur.append((_LIT, ord(_unquote('"' + text[1:-1] + '"'))))
            elif kind == "num":
                cur.append((_LIT, _number(text)))
            elif kind == "ident":
                if text == "true" or text == "false":
                    cur.append((_LIT, text == "true"))
                elif text == "nil":
                    cur.append((_LIT, None))
                elif text in _UNSUPPORTED or text in ("if", "range", "with", "else", "end"):
                    raise FormatError(f"template: :{line}: unexpected <{text}> in command")
                elif text not in _FUNCS:
                    raise FormatError(f'template: :{line}: function "{text}" not defined')
                else:
                    cur.append((_FUNC, text))
            else:
                raise FormatError(f"template: :{line}: unexpected {text!r} in command")
        if cur:
            cmds.append(cur)
        elif cmds:
            raise FormatError(f"template: :{line}: missing command after '|'")
        return cmds, toks


def _find_close(text: str, start: int) -> int:
    """The `}}` closing an action, skipping quoted strings."""
    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c == "`":
            j = text.find("`", i + 1)
            i = n if j < 0 else j
        elif text.startswith("}}", i):
            return i
        i += 1
    return -1


# --------------------------------------------------------------------------- values


def _go_float(f: float) -> str:
    """Go's %v for float64: the shortest digits, in exponent form when the exponent is < -4 or
    >= 6 (so 4261375.0 prints as 4.261375e+06, as Go does)."""
    from decimal import Decimal

    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    d = Decimal(repr(abs(f))).normalize()
    _, digits, exp = d.as_tuple()
    lead = len(digits) - 1 + int(exp)
    sign = "-" if f < 0 else ""
    if lead < -4 or lead >= 6:
        ds = "".join(map(str, digits))
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{sign}{mant}e{'-' if lead < 0 else '+'}{abs(lead):02d}"
    return sign + format(d, "f")


def to_text(v: Any) -> str:
    """Go's fmt %v of a JSON-ish value."""
    if v is MISSING:
        return "<no value>"
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _go_float(v)
    if isinstance(v, Row):
        return to_text(v.as_dict())
    if isinstance(v, dict):
        return "map[" + " ".join(f"{to_text(k)}:{to_text(v[k])}"
                                 for k in sorted(v, key=str)) + "]"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(to_text(x) for x in v) + "]"
    return str(v)


def _truth(v: Any) -> bool:
    if v is MISSING or v is None:
        return False
    if isinstance(v, Row):
        return True
    return bool(v)


def _json_value(v: Any) -> Any:
    if v is MISSING:
        return None
    if isinstance(v, Row):
        return {k: _json_value(x) for k, x in v.as_dict().items()}
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    return v


def go_json(v: Any) -> str:
    """Go's json.Marshal: compact, map keys sorted, <>& escaped."""
    s = _json.dumps(_json_value(v), separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# --------------------------------------------------------------------------- functions


def _f_join(items: Any, sep: Any = "") -> str:
    if items is None or items is MISSING:
        return ""
    if isinstance(items, str):
        return items
    if not isinstance(items, (list, tuple)):
        raise FormatError(f"wrong type for value; expected []string; got {_type(items)}")
    return str(sep).join(to_text(x) for x in items)


def _f_index(coll: Any, *keys: Any) -> Any:
    v = coll
    for k in keys:
        if v is None or v is MISSING:
            raise FormatError("error calling index: index of untyped nil")
        if isinstance(v, dict):
            v = v.get(k, MISSING) if not isinstance(k, int) or k in v else v[k]
        elif isinstance(v, Row):
            v = v.get(str(k))
        elif isinstance(v, (list, tuple, str)):
            if not isinstance(k, int) or isinstance(k, bool):
                raise FormatError(f"error calling index: cannot index slice/array with type "
                                  f"{_type(k)}")
            if k < 0 or k >= len(v):
                raise FormatError(f"error calling index: index out of range: {k}")
            v = v[k]
            if isinstance(v, str) and len(v) == 1 and isinstance(coll, str):
                v = ord(v)
        else:
            raise FormatError(f"error calling index: can't index item of type {_type(v)}")
    return v


def _f_slice(item: Any, *idx: Any) -> Any:
    if not isinstance(item, (list, tuple, str)):
        raise FormatError(f"error calling slice: can't slice item of type {_type(item)}")
    if len(idx) > 2:
        raise FormatError("error calling slice: too many slice indexes")
    a = idx[0] if idx else 0
    b = idx[1] if len(idx) > 1 else len(item)
    if not (0 <= a <= b <= len(item)):
        raise FormatError(f"error calling slice: index out of range: {a}:{b}")
    return item[a:b]


def _f_len(v: Any) -> int:
    if isinstance(v, (list, tuple, dict, str)):
        return len(v)
    raise FormatError(f"error calling len: len of type {_type(v)}")


def _cmp_key(a: Any, b: Any, op: str) -> tuple[Any, Any]:
    if isinstance(a, bool) != isinstance(b, bool):
        raise FormatError(f"error calling {op}: incompatible types for comparison")
    num = (int, float)
    if isinstance(a, num) and isinstance(b, num) or isinstance(a, str) and isinstance(b, str):
        return a, b
    if op in ("eq", "ne") and (a is None or b is None or a is MISSING or b is MISSING):
        return a is None or a is MISSING, b is None or b is MISSING
    if type(a) is type(b) and op in ("eq", "ne"):
        return a, b
    raise FormatError(f"error calling {op}: incompatible types for comparison")


def _f_eq(a: Any, *bs: Any) -> bool:
    if not bs:
        raise FormatError("error calling eq: missing argument for comparison")
    for b in bs:
        x, y = _cmp_key(a, b, "eq")
        if x == y:
            return True
    return False


def _ordered(op: str, f: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def cmp(a: Any, b: Any) -> bool:
        x, y = _cmp_key(a, b, op)
        if isinstance(x, bool) or x is None:
            raise FormatError(f"error calling {op}: invalid type for comparison")
        return f(x, y)
    return cmp


_VERB = re.compile(r"%([-+# 0]*)(\*|\d+)?(?:\.(\*|\d+)?)?([a-zA-Z%])")


def go_sprintf(fmt: str, *args: Any) -> str:
    """Go's fmt.Sprintf for the verbs people use in templates."""
    out: list[str] = []
    pos = 0
    ai = 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos:m.start()])
        pos = m.end()
        flags, width, prec, verb = m.groups()
        if verb == "%":
            out.append("%")
            continue
        if width == "*":
            width = str(args[ai]) if ai < len(args) else ""
            ai += 1
        if prec == "*":
            prec = str(args[ai]) if ai < len(args) else ""
            ai += 1
        if ai >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        a = args[ai]
        ai += 1
        spec_flags = flags.replace("#", "") if verb in "sdvqtc" else flags
        ptail = f".{prec}" if prec is not None and prec != "" else (
            ".0" if prec == "" else "")
        spec = f"{spec_flags}{width or ''}"
        try:
            if verb in ("v", "s"):
                s = to_text(a)
                if prec:
                    s = s[: int(prec)]
                out.append(format(s, ("<" if "-" in flags else ">") + (width or "")))
            elif verb == "q":
                s = _json.dumps(to_text(a), ensure_ascii=False)
                out.append(format(s, ("<" if "-" in flags else ">") + (width or "")))
            elif verb == "t":
                out.append(format(to_text(a), ("<" if "-" in flags else ">") + (width or "")))
            elif verb in "dxXob":
                if isinstance(a, float) and a.is_integer():
                    a = int(a)
                if not isinstance(a, int) or isinstance(a, bool):
                    out.append(f"%!{verb}({_type(a)}={to_text(a)})")
                    continue
                out.append(("%" + spec + ("d" if verb == "d" else verb)) % a
                           if verb != "b" else format(a, spec.replace("-", "<") + "b"))
            elif verb in "feEgG":
                if not isinstance(a, (int, float)) or isinstance(a, bool):
                    out.append(f"%!{verb}({_type(a)}={to_text(a)})")
                    continue
                out.append(("%" + spec + ptail + verb) % a)
            elif verb == "c":
                out.append(chr(a) if isinstance(a, int) else f"%!c({_type(a)}={to_text(a)})")
            else:
                out.append(f"%!{verb}({_type(a)}={to_text(a)})")
        except (TypeError, ValueError):
            out.append(f"%!{verb}({_type(a)}={to_text(a)})")
    out.append(fmt[pos:])
    if ai < len(args):
        out.append("%!(EXTRA " + ", ".join(f"{_type(a)}={to_text(a)}" for a in args[ai:]) + ")")
    return "".join(out)


def _go_sprint(*args: Any) -> str:
    out = []
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(to_text(a))
    return "".join(out)


def _f_pad(s: Any, before: int, after: int) -> str:
    return " " * int(before) + to_text(s) + " " * int(after)


def _f_truncate(s: Any, n: int) -> str:
    t = to_text(s)
    return t[: int(n)] if len(t) > int(n) else t


def _f_title(s: Any) -> str:
    return re.sub(r"(^|[^\w'])(\w)", lambda m: m.group(1) + m.group(2).upper(), to_text(s))


def _f_split(s: Any, sep: Any) -> list[str]:
    t, p = to_text(s), to_text(sep)
    return list(t) if p == "" else t.split(p)


def _type(v: Any) -> str:
    if v is None or v is MISSING:
        return "<nil>"
    return {bool: "bool", int: "int", float: "float64", str: "string", list: "[]interface {}",
            tuple: "[]interface {}", dict: "map[string]interface {}"}.get(type(v),
                                                                           type(v).__name__)


_FUNCS: dict[str, Callable[..., Any]] = {
    "json": go_json,
    "join": _f_join,
    "split": _f_split,
    "lower": lambda s: to_text(s).lower(),
    "upper": lambda s: to_text(s).upper(),
    "title": _f_title,
    "pad": _f_pad,
    "truncate": _f_truncate,
    "printf": lambda fmt, *a: go_sprintf(to_text(fmt), *a),
    "print": _go_sprint,
    "println": lambda *a: " ".join(to_text(x) for x in a) + "\n",
    "index": _f_index,
    "slice": _f_slice,
    "len": _f_len,
    "not": lambda v: not _truth(v),
    "eq": _f_eq,
    "ne": lambda a, b: not _f_eq(a, b),
    "lt": _ordered("lt", lambda a, b: a < b),
    "le": _ordered("le", lambda a, b: a <= b),
    "gt": _ordered("gt", lambda a, b: a > b),
    "ge": _ordered("ge", lambda a, b: a >= b),
    # and/or are evaluated lazily by the executor
    "and": lambda *a: a[-1],
    "or": lambda *a: a[-1],
}


# --------------------------------------------------------------------------- execution


class _Scope:
    def __init__(self, root: Any):
        self.vars: list[tuple[str, Any]] = [("$", root)]

    def get(self, name: str, line: int) -> Any:
        for n, v in reversed(self.vars):
            if n == name:
                return v
        raise FormatError(f'template: :{line}: undefined variable "{name}"')

    def set(self, name: str, value: Any, line: int) -> None:
        for i in range(len(self.vars) - 1, -1, -1):
            if self.vars[i][0] == name:
                self.vars[i] = (name, value)
                return
        raise FormatError(f'template: :{line}: undefined variable "{name}"')


def _field(v: Any, name: str, line: int) -> Any:
    if isinstance(v, Row):
        try:
            return v.get(name)
        except FormatError as e:
            raise FormatError(f"template: :{line}: executing at <.{name}>: {e}") from None
    if isinstance(v, dict):
        return v.get(name, MISSING)
    if v is None or v is MISSING:
        return MISSING
    raise FormatError(f"template: :{line}: executing at <.{name}>: can't evaluate field "
                      f"{name} in type {_type(v)}")


class Template:
    """A parsed template; `execute(data)` renders it."""

    def __init__(self, text: str):
        self.text = text
        self.nodes = _Parser(text).parse()

    def execute(self, data: Any) -> str:
        out: list[str] = []
        scope = _Scope(data)
        self._run(self.nodes, data, scope, out)
        return "".join(out)

    def _run(self, nodes: list, dot: Any, scope: _Scope, out: list[str]) -> None:
        for n in nodes:
            if isinstance(n, _Text):
                out.append(n.text)
            elif isinstance(n, _Action):
                v = self._pipe(n.pipe, dot, scope)
                if not n.pipe.decl:
                    out.append(to_text(v))
            elif isinstance(n, _Branch):
                self._branch(n, dot, scope, out)

    def _branch(self, n: _Branch, dot: Any, scope: _Scope, out: list[str]) -> None:
        mark = len(scope.vars)
        try:
            if n.kind == "range":
                self._range(n, dot, scope, out)
                return
            v = self._pipe(n.pipe, dot, scope)
            if _truth(v):
                self._run(n.body, v if n.kind == "with" else dot, scope, out)
            elif n.orelse is not None:
                self._run(n.orelse, dot, scope, out)
        finally:
            del scope.vars[mark:]

    def _range(self, n: _Branch, dot: Any, scope: _Scope, out: list[str]) -> None:
        decl = n.pipe.decl
        pipe = _Pipeline([], False, n.pipe.cmds, n.pipe.line)
        v = self._pipe(pipe, dot, scope)
        if isinstance(v, dict):
            items = [(k, v[k]) for k in sorted(v, key=str)]
        elif isinstance(v, (list, tuple)):
            items = list(enumerate(v))
        elif isinstance(v, int) and not isinstance(v, bool):
            items = [(i, i) for i in range(v)]
        elif v is None or v is MISSING:
            items = []
        else:
            raise FormatError(f"template: :{n.pipe.line}: range can't iterate over "
                              f"{to_text(v)}")
        if not items:
            if n.orelse is not None:
                self._run(n.orelse, dot, scope, out)
            return
        mark = len(scope.vars)
        for k, elem in items:
            del scope.vars[mark:]
            if len(decl) == 1:
                scope.vars.append((decl[0], elem))
            elif len(decl) == 2:
                scope.vars.append((decl[0], k))
                scope.vars.append((decl[1], elem))
            self._run(n.body, elem, scope, out)

    def _pipe(self, p: _Pipeline, dot: Any, scope: _Scope) -> Any:
        v: Any = MISSING
        for i, cmd in enumerate(p.cmds):
            v = self._cmd(cmd, dot, scope, p.line, v if i else None, i > 0)
        if p.decl:
            if p.assign:
                scope.set(p.decl[0], v, p.line)
            else:
                for name in p.decl:
                    scope.vars.append((name, v))
        return v

    def _operand(self, op: tuple, dot: Any, scope: _Scope, line: int) -> Any:
        kind = op[0]
        if kind == _LIT:
            return op[1]
        if kind == _FIELD:
            v = dot
            for name in op[1]:
                v = _field(v, name, line)
            return v
        if kind == _VAR:
            v = scope.get(op[1], line)
            for name in op[2]:
                v = _field(v, name, line)
            return v
        if kind == _SUB:
            v = self._pipe(op[1], dot, scope)
            for name in op[2]:
                v = _field(v, name, line)
            return v
        if kind == _FUNC:
            return self._call(op[1], [], line)
        raise FormatError(f"template: :{line}: bad operand")

    def _cmd(self, cmd: list, dot: Any, scope: _Scope, line: int, prev: Any,
             piped: bool) -> Any:
        head = cmd[0]
        if head[0] == _FUNC:
            name = head[1]
            if name in ("and", "or"):
                args = [lambda o=o: self._operand(o, dot, scope, line) for o in cmd[1:]]
                if piped:
                    args.append(lambda: prev)
                if not args:
                    raise FormatError(f"template: :{line}: wrong number of args for {name}")
                result: Any = None
                for a in args:
                    result = a()
                    if _truth(result) != (name == "and"):
                        return result
                return result
            args = [self._operand(o, dot, scope, line) for o in cmd[1:]]
            if piped:
                args.append(prev)
            return self._call(name, args, line)
        if len(cmd) > 1 or piped:
            what = {_FIELD: "field", _VAR: "variable", _LIT: "literal", _SUB: "pipeline"}
            raise FormatError(f"template: :{line}: can't give argument to non-function "
                              f"({what.get(head[0], head[0])})")
        return self._operand(head, dot, scope, line)

    @staticmethod
    def _call(name: str, args: list, line: int) -> Any:
        fn = _FUNCS[name]
        try:
            return fn(*args)
        except FormatError as e:
            msg = str(e)
            raise FormatError(msg if msg.startswith("template:")
                              else f"template: :{line}: executing at <{name}>: {msg}") from None
        except TypeError:
            raise FormatError(f"template: :{line}: wrong number of args for {name}: "
                              f"got {len(args)}") from None


# --------------------------------------------------------------------------- docker's layer


def _unescape(fmt: str) -> str:
    # docker turns the two-character sequences \t and \n of a --format into tab and newline
    return fmt.replace("\\t", "\t").replace("\\n", "\n")


def parse(fmt: str) -> Template:
    try:
        return Template(fmt)
    except FormatError as e:
        raise FormatError(f"template parsing error: {e}") from None
    except RecursionError:
        raise FormatError("template parsing error: template nested too deeply") from None


def render(fmt: str, data: Any) -> str:
    """One object (inspect, version, info): `json` prints it as JSON; else a template. The
    result ends with a newline."""
    if fmt.strip() == "json":
        return go_json(data) + "\n"
    return parse(_unescape(fmt)).execute(data) + "\n"


def render_list(fmt: str | None, rows: Iterable[Any], default_table: str,
                headers: dict[str, str], quiet_field: str | None = None) -> str:
    """A list command's output (images, history, ps…). `fmt` None/"" or "table" uses
    `default_table`; `json` prints one JSON object per line; `table …` adds a header row;
    otherwise one rendered template per row."""
    fmt = (fmt or "").strip("\n") or "table"
    if fmt.strip() == "json":
        fmt = "{{json .}}"
    elif fmt.strip() == "table":
        fmt = default_table
    fmt = _unescape(fmt)
    table = fmt.startswith("table")
    if table:
        fmt = fmt[len("table"):].lstrip(" ")
    tmpl = parse(fmt)
    lines: list[str] = []
    if table:
        lines.append(tmpl.execute(_HeaderContext(headers)))
    for row in rows:
        lines.append(tmpl.execute(row))
    text = "".join(line + "\n" for line in lines)
    return tabulate(text) if table else text


class _HeaderContext(Row):
    def __init__(self, headers: dict[str, str]):
        super().__init__("header", dict(headers))

    def get(self, name: str) -> Any:
        return self._fields.get(name, "")


def tabulate(text: str, minwidth: int = 10, padding: int = 3) -> str:
    """Go's text/tabwriter (tab-terminated cells, left-aligned, padded with spaces) with
    docker's settings: minwidth 10, tabwidth 1, padding 3."""
    raw = text.split("\n")
    trailing = raw[-1]
    rows = [line.split("\t") for line in raw[:-1]]
    widths: list[int] = []
    out: list[str] = []

    def write(line0: int, line1: int) -> None:
        for line in rows[line0:line1]:
            parts = []
            for j, cell in enumerate(line):
                if j < len(widths) and j < len(line) - 1:
                    parts.append(cell + " " * max(0, widths[j] - len(cell)))
                else:
                    parts.append(cell)
            out.append("".join(parts) + "\n")

    def fmt(line0: int, line1: int) -> None:
        column = len(widths)
        this = line0
        while this < line1:
            if column >= len(rows[this]) - 1:
                this += 1
                continue
            write(line0, this)
            line0 = this
            width = minwidth
            while this < line1 and column < len(rows[this]) - 1:
                width = max(width, len(rows[this][column]) + padding)
                this += 1
            widths.append(width)
            fmt(line0, this)
            widths.pop()
            line0 = this
        write(line0, line1)

    fmt(0, len(rows))
    return "".join(out) + trailing


# --------------------------------------------------------------------------- units and times


_DECIMAL = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
_BINARY = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"]


def _scaled(size: float, base: float, units: list[str], precision: int) -> str:
    i = 0
    while size >= base and i < len(units) - 1:
        size /= base
        i += 1
    return f"{size:.{precision}g}{units[i]}"


def human_size(size: float, precision: int = 3) -> str:
    """docker's sizes: decimal units, 3 significant digits ("4.26MB", "0B")."""
    return _scaled(float(size), 1000.0, _DECIMAL, precision)


def bytes_size(size: float) -> str:
    """Binary units with 4 significant digits ("7.773GiB"), as docker info shows memory."""
    return _scaled(float(size), 1024.0, _BINARY, 4)


def parse_time(v: Any) -> float | None:
    """Unix seconds from an int, or an RFC 3339 string (nanoseconds allowed); None if unknown."""
    if v is None or v == "" or v is MISSING:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    s = str(v).strip()
    m = re.match(r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)?$", s)
    if not m:
        return None
    frac = float(m.group(3) or 0)
    tz = m.group(4) or "Z"
    if tz == "Z":
        off = 0
    else:
        t = tz.replace(":", "")
        off = (int(t[1:3]) * 3600 + int(t[3:5]) * 60) * (1 if t[0] == "+" else -1)
    dt = datetime.strptime(f"{m.group(1)} {m.group(2)}", "%Y-%m-%d %H:%M:%S")
    return dt.replace(tzinfo=timezone.utc).timestamp() - off + frac


def time_ago(v: Any, now: float | None = None) -> str:
    t = parse_time(v)
    if t is None or t <= 0:
        return "N/A"
    return human_duration((now if now is not None else time.time()) - t) + " ago"


def go_time_string(v: Any) -> str:
    """Go's time.Time.String() in local time: "2024-05-01 10:00:00 +0200 CEST"."""
    t = parse_time(v)
    if t is None:
        return ""
    local = datetime.fromtimestamp(t).astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S %z ") + (local.tzname() or "")


def short_id(image_id: str, trunc: bool = True) -> str:
    if not trunc:
        return image_id
    return image_id.split(":", 1)[-1][:12]
