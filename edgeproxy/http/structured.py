"""Just enough of Structured Field Values (RFC 8941) to parse a Dictionary.

Targeted cache-control fields such as CDN-Cache-Control are Dictionaries
(RFC 9213 section 2.2), and a field that fails to parse is ignored as a whole,
so validity has to be decided by the real grammar, not Cache-Control's
lenient one. Parameters are parsed (to find the end of a member) and dropped:
no cache directive defines any.
"""

from __future__ import annotations

import string
from typing import Literal, NamedTuple

Kind = Literal["integer", "decimal", "string", "token", "bytes", "boolean", "inner-list"]

_LCALPHA = frozenset(string.ascii_lowercase)
_DIGIT = frozenset(string.digits)
_ALPHA = frozenset(string.ascii_letters)
_KEY_REST = _LCALPHA | _DIGIT | frozenset("_-.*")
_TCHAR = _ALPHA | _DIGIT | frozenset("!#$%&'*+-.^_`|~")
_TOKEN_REST = _TCHAR | frozenset(":/")
_BASE64 = _ALPHA | _DIGIT | frozenset("+/=")


class Member(NamedTuple):
    """A Dictionary member's value: its kind and text.

    text is the digits for numbers, the unescaped content for strings, "?1"
    or "?0" for booleans (a bare key is "?1"), and the source text otherwise.
    """

    kind: Kind
    text: str


class _Fail(Exception):
    """Internal: the input does not match the grammar."""


class _Scanner:
    def __init__(self, s: str) -> None:
        self.s = s
        self.i = 0

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def take(self) -> str:
        c = self.peek()
        if not c:
            raise _Fail
        self.i += 1
        return c

    def skip(self, chars: str) -> None:
        while self.peek() and self.peek() in chars:
            self.i += 1

    def key(self) -> str:
        # key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )
        c = self.peek()
        if not c or not (c in _LCALPHA or c == "*"):
            raise _Fail
        start = self.i
        self.i += 1
        while self.peek() and self.peek() in _KEY_REST:
            self.i += 1
        return self.s[start : self.i]

    def parameters(self) -> None:
        while self.peek() == ";":
            self.i += 1
            self.skip(" ")
            self.key()
            if self.peek() == "=":
                self.i += 1
                self.bare_item()

    def item_or_inner_list(self) -> Member:
        if self.peek() != "(":
            member = self.bare_item()
            self.parameters()
            return member
        start = self.i
        self.i += 1
        while True:
            self.skip(" ")
            if self.peek() == ")":
                self.i += 1
                text = self.s[start : self.i]
                self.parameters()
                return Member("inner-list", text)
            self.bare_item()
            self.parameters()
            if self.peek() not in (" ", ")"):
                raise _Fail  # also end of input: an unclosed list

    def bare_item(self) -> Member:
        c = self.peek()
        if c == "-" or (c and c in _DIGIT):
            return self.number()
        if c == '"':
            return self.string()
        if c == "*" or (c and c in _ALPHA):
            start = self.i
            self.i += 1
            while self.peek() and self.peek() in _TOKEN_REST:
                self.i += 1
            return Member("token", self.s[start : self.i])
        if c == ":":
            start = self.i
            self.i += 1
            while self.peek() and self.peek() in _BASE64:
                self.i += 1
            if self.take() != ":":
                raise _Fail
            return Member("bytes", self.s[start : self.i])
        if c == "?":
            self.i += 1
            b = self.take()
            if b not in ("0", "1"):
                raise _Fail
            return Member("boolean", "?" + b)
        raise _Fail

    def number(self) -> Member:
        # RFC 8941 section 4.2.4: at most 15 integer digits, or 12.3 decimal.
        start = self.i
        if self.peek() == "-":
            self.i += 1
        if not (self.peek() and self.peek() in _DIGIT):
            raise _Fail
        digits_start = self.i
        dot = -1
        while self.peek():
            c = self.peek()
            if c in _DIGIT:
                self.i += 1
            elif c == "." and dot < 0:
                if self.i - digits_start > 12:
                    raise _Fail
                dot = self.i
                self.i += 1
            else:
                break
        text = self.s[start : self.i]
        if dot < 0:
            if self.i - digits_start > 15:
                raise _Fail
            return Member("integer", text)
        frac = self.i - dot - 1
        if not 1 <= frac <= 3:
            raise _Fail
        return Member("decimal", text)

    def string(self) -> Member:
        self.i += 1
        out: list[str] = []
        while True:
            c = self.take()
            if c == "\\":
                nxt = self.take()
                if nxt not in ('"', "\\"):
                    raise _Fail
                out.append(nxt)
            elif c == '"':
                return Member("string", "".join(out))
            elif not " " <= c <= "~":
                raise _Fail
            else:
                out.append(c)


def parse_dictionary(value: str) -> dict[str, Member] | None:
    """An sf-dictionary (RFC 8941 section 4.2.2), or None when it does not parse.

    A repeated key keeps its last value, as 4.2.2 says. Never raises.
    """
    sc = _Scanner(value.strip(" \t"))
    out: dict[str, Member] = {}
    try:
        while sc.peek():
            key = sc.key()
            if sc.peek() == "=":
                sc.i += 1
                out[key] = sc.item_or_inner_list()
            else:
                sc.parameters()
                out[key] = Member("boolean", "?1")
            sc.skip(" \t")
            if not sc.peek():
                break
            if sc.take() != ",":
                raise _Fail
            sc.skip(" \t")
            if not sc.peek():
                raise _Fail  # a trailing comma
    except _Fail:
        return None
    return out
