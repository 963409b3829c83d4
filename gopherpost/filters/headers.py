# -*- test-case-name: tests.test_filters_headers -*-
"""
A message's header section as a list of fields that filters edit.

Fields nobody touched keep their exact bytes (folding, case, 8-bit
octets), so an unedited section renders as it was received and a DKIM
signature over it still verifies.  New values are folded safely: a line
break in a value always continues the field (a filter can never start a
new field or end the header section), and NUL and bare CR are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["HeaderField", "HeaderSection", "formatField", "isFieldName"]

_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+\Z")
_LINE_BREAK = re.compile(rb"\r\n|\n|\r")


def isFieldName(name: bytes) -> bool:
    """
    Whether C{name} is a header field name (RFC 5322: printable US-ASCII
    but the colon).
    """
    return bool(_FIELD_NAME.match(name))


def formatField(name: bytes, value: bytes) -> bytes:
    """
    One header field, CRLF at the end.

    @param value: what follows the colon; a leading space is added when it
        does not start with white space.  Lines (C{\\n}, C{\\r\\n}) after
        the first are continuation lines: each starts with white space (a
        tab is added otherwise); lines of white space only are left out.
    @raise ValueError: if C{name} is not a field name.
    """
    if not isFieldName(name):
        raise ValueError(f"not a header field name: {name!r}")
    value = value.replace(b"\x00", b"")
    lines = _LINE_BREAK.split(value)
    first = lines[0]
    if first and first[:1] not in (b" ", b"\t"):
        first = b" " + first
    out = [name + b":" + first]
    for line in lines[1:]:
        if not line.strip(b" \t"):
            continue
        if line[:1] not in (b" ", b"\t"):
            line = b"\t" + line
        out.append(line)
    return b"\r\n".join(out) + b"\r\n"


@dataclass
class HeaderField:
    """
    One field as it stands in the section.

    @ivar raw: its bytes, continuation lines and final CRLF included.
    """

    raw: bytes

    @property
    def name(self) -> bytes | None:
        """
        The field name as written, or L{None} for a line that is not a
        field.
        """
        name, colon, _ = self.raw.partition(b":")
        name = name.rstrip(b" \t")
        if not colon or not isFieldName(name):
            return None
        return name

    @property
    def value(self) -> bytes:
        """
        What follows the colon, folds kept (CRLF), without the final CRLF.
        """
        _, _, value = self.raw.partition(b":")
        return value[:-2] if value.endswith(b"\r\n") else value

    def named(self, name: bytes) -> bool:
        """
        Whether this field is called C{name} (any case).
        """
        own = self.name
        return own is not None and own.lower() == name.lower()


class HeaderSection:
    """
    An editable header section.

    @param section: the section as received: fields ending in CRLF,
        without the empty line that ends it.
    """

    def __init__(self, section: bytes = b"") -> None:
        self.fields: list[HeaderField] = []
        self.changed = False
        lines = section.split(b"\r\n")
        if lines[-1] == b"":
            lines.pop()
        for line in lines:
            if self.fields and line[:1] in (b" ", b"\t"):
                self.fields[-1].raw += line + b"\r\n"
            else:
                self.fields.append(HeaderField(line + b"\r\n"))

    def __iter__(self) -> Iterator[HeaderField]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def render(self) -> bytes:
        """
        The section as it now is (fields ending in CRLF).
        """
        return b"".join(f.raw for f in self.fields)

    def values(self, name: bytes) -> list[bytes]:
        """
        The values of every field called C{name}, in order.
        """
        return [f.value for f in self.fields if f.named(name)]

    def _positions(self, name: bytes) -> list[int]:
        return [i for i, f in enumerate(self.fields) if f.named(name)]

    def add(self, name: bytes, value: bytes) -> None:
        """
        Append a field.
        """
        self.fields.append(HeaderField(formatField(name, value)))
        self.changed = True

    def insert(self, index: int, name: bytes, value: bytes) -> None:
        """
        Insert a field before the one at C{index} (0 is the top; past the
        end appends).
        """
        self.fields.insert(max(0, index), HeaderField(formatField(name, value)))
        self.changed = True

    def change(self, name: bytes, index: int, value: bytes) -> None:
        """
        Set the value of the C{index}-th field called C{name} (1-based; 0
        counts as 1); with fewer such fields, append one.
        """
        positions = self._positions(name)
        nth = max(index, 1)
        formatted = HeaderField(formatField(name, value))
        if nth <= len(positions):
            self.fields[positions[nth - 1]] = formatted
        else:
            self.fields.append(formatted)
        self.changed = True

    def delete(self, name: bytes, index: int = 0) -> int:
        """
        Delete fields called C{name}: all of them (C{index} 0), the n-th
        (n > 0) or the n-th from the end (-n).

        @return: how many were deleted.
        """
        positions = self._positions(name)
        if index == 0:
            doomed = positions
        elif 0 < index <= len(positions):
            doomed = [positions[index - 1]]
        elif 0 < -index <= len(positions):
            doomed = [positions[index]]
        else:
            doomed = []
        for i in reversed(doomed):
            del self.fields[i]
        if doomed:
            self.changed = True
        return len(doomed)
