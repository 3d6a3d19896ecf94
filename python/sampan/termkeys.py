"""docker's detach keys: the syntax (`ctrl-p,ctrl-q`, single characters, `ctrl-@`…`ctrl-_`)
and a matcher over a byte stream. Shared by the daemon's attach relay and the CLI."""

from __future__ import annotations

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
_CTRL_PUNCT = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}


def parse(spec: str | None) -> bytes:
    """The byte sequence; ValueError("Invalid detach keys (…) provided") when malformed."""
    if spec is None or spec == "":
        spec = DEFAULT_DETACH_KEYS
    out = bytearray()
    for key in spec.split(","):
        k = key.strip()
        low = k.lower()
        if len(k) == 1:
            out.append(ord(k) & 0xFF)
        elif low.startswith("ctrl-") and len(k) == 6 and ("a" <= low[5] <= "z"
                                                         or low[5] in _CTRL_PUNCT):
            ch = low[5]
            out.append(ord(ch) - ord("a") + 1 if "a" <= ch <= "z" else _CTRL_PUNCT[ch])
        else:
            raise ValueError(f"Invalid detach keys ({spec}) provided")
    return bytes(out)


class Detacher:
    """Finds the detach sequence in a stream fed in chunks; bytes of a partial match are held
    back and given through when the match breaks."""

    def __init__(self, keys: bytes):
        self.keys = keys
        self.pos = 0

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(bytes to pass on, whether the sequence completed)."""
        if not self.keys:
            return data, False
        out = bytearray()
        for b in data:
            if b == self.keys[self.pos]:
                self.pos += 1
                if self.pos == len(self.keys):
                    self.pos = 0
                    return bytes(out), True
                continue
            if self.pos:
                out += self.keys[:self.pos]
                self.pos = 0
                if b == self.keys[0]:
                    self.pos = 1
                    continue
            out.append(b)
        return bytes(out), False
