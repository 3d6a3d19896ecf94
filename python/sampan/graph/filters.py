"""Docker's filter arguments, glob matching of references and time values."""

from __future__ import annotations

import calendar
import re
import time
from datetime import datetime, timezone

from sampan.errors import InvalidArgument

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?"
    r"\s*(Z|z|[+-]\d{2}:?\d{2})?$")
ZERO_TIME = "0001-01-01T00:00:00Z"


def parse_time(value) -> float:
    """RFC 3339 (any fraction, any offset) → unix seconds; 0.0 for empty or unparsable."""
    if not value or not isinstance(value, str):
        return 0.0
    m = _RFC3339.match(value.strip())
    if not m:
        return 0.0
    y, mo, d, h, mi, s, frac, tz = m.groups()
    try:
        secs = calendar.timegm((int(y), int(mo), int(d), int(h or 0), int(mi or 0),
                                int(s or 0), 0, 0, 0))
    except (ValueError, OverflowError):
        return 0.0
    if frac:
        secs += float("0." + frac)
    if tz and tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        secs -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return float(secs)


def format_time(ts) -> str:
    """unix seconds → RFC 3339 with nanoseconds as Go prints it ("…Z"); zero time for None."""
    if ts is None:
        return ZERO_TIME
    ns = round(float(ts) * 1e9)
    secs, frac = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(secs, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        base += "." + f"{frac:09d}".rstrip("0")
    return base + "Z"


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def parse_duration(value: str) -> float | None:
    """A Go duration ("1h30m", "10s") in seconds, or None."""
    v = value.strip()
    sign = 1
    if v[:1] in "+-":
        sign = -1 if v[0] == "-" else 1
        v = v[1:]
    if not v:
        return None
    pos, total = 0, 0.0
    for m in _DURATION.finditer(v):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(v) or pos == 0:
        return None
    return sign * total


def parse_timestamp(value: str, now: float | None = None) -> float:
    """Docker's `until`/`since` values: a duration before now, unix seconds, or a date/time."""
    now = time.time() if now is None else now
    value = str(value).strip()
    dur = parse_duration(value)
    if dur is not None:
        return now - dur
    if re.match(r"^\d+(\.\d+)?$", value):
        return float(value)
    if _RFC3339.match(value):
        m = _RFC3339.match(value)
        ts = parse_time(value)
        if m.group(8) is None:  # no zone: local time, as docker reads it
            ts += time.timezone if not time.daylight else time.altzone
        return ts
    raise InvalidArgument(f"failed to parse value as time or duration: {value!r}")


def normalize(filters, allowed) -> dict:
    """{"key": [values]} from the API's forms ({"k": ["v"]} or the old {"k": {"v": true}})."""
    if not filters:
        return {}
    if isinstance(filters, str):
        import json

        try:
            filters = json.loads(filters)
        except ValueError:
            raise InvalidArgument(f"invalid filters: {filters!r}") from None
    if not isinstance(filters, dict):
        raise InvalidArgument("invalid filters: expected an object")
    out = {}
    for key, values in filters.items():
        if key not in allowed:
            raise InvalidArgument(f"invalid filter '{key}'")
        if isinstance(values, dict):
            vals = [k for k, v in values.items() if v]
        elif isinstance(values, str):
            vals = [values]
        else:
            vals = [str(v) for v in values]
        out[key] = vals
    return out


def bool_filter(filters: dict, key: str) -> bool | None:
    vals = filters.get(key)
    if not vals:
        return None
    results = set()
    for v in vals:
        lv = v.lower()
        if lv in ("true", "1"):
            results.add(True)
        elif lv in ("false", "0"):
            results.add(False)
        else:
            raise InvalidArgument(f"invalid filter '{key}={v}'")
    if len(results) > 1:
        raise InvalidArgument(f"conflicting values for filter '{key}'")
    return results.pop()


def labels_match(labels: dict, wanted: list) -> bool:
    """Every `key` or `key=value` in `wanted` holds for `labels`."""
    labels = labels or {}
    for w in wanted:
        if "=" in w:
            k, v = w.split("=", 1)
            if labels.get(k) != v:
                return False
        elif w not in labels:
            return False
    return True


def glob_to_regex(pattern: str) -> re.Pattern:
    """Go's path.Match: `*` and `?` do not cross '/', `[...]` classes with `^` negation."""
    out = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            j = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("^", "!") else i + 1)
            if j == -1:
                raise InvalidArgument(f"invalid reference filter pattern {pattern!r}")
            body = pattern[i + 1:j]
            neg = body[:1] in ("^", "!")
            if neg:
                body = body[1:]
            body = body.replace("\\", "\\\\")
            out.append(f"[^/{body}]" if neg else f"[{body}]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("^" + "".join(out) + "$")


def familiar_match(pattern: str, familiar: str, familiar_name: str) -> bool:
    """Docker's reference.FamiliarMatch: the whole familiar string, else its repository name."""
    rx = glob_to_regex(pattern)
    return bool(rx.match(familiar) or rx.match(familiar_name))
