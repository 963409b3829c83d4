# -*- test-case-name: tests.test_esmtp_xtext -*-
"""
The encodings of DSN parameter values.

  - xtext (RFC 3461 4): printable US-ASCII but C{+} and C{=} as they are,
    every other octet as C{+XX} (two hexadecimal digits).  ENVID and the
    address of an ORCPT of any type but C{utf-8} use it.
  - utf-8-addr-xtext and utf-8-addr-unitext (RFC 6533 3): the address of
    an C{ORCPT=utf-8;...}; printable US-ASCII but C{+}, C{=} and C{\\} as
    they are, any other character as C{\\x{HEX}} (its code point), and in
    the unitext form (only with SMTPUTF8) non-ASCII characters also as
    they are.

Decoders return L{None} for a value that is not in the encoding: callers
turn that into their own reply.
"""

from __future__ import annotations

import re

__all__ = [
    "decodeXtext",
    "encodeXtext",
    "isXtext",
    "decodeUTF8Address",
    "encodeUTF8Address",
]

_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-Fa-f]{2})*\Z")
_HEXCHAR = re.compile(r"\+([0-9A-Fa-f]{2})")
_EMBEDDED = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
# QCHAR (RFC 6533 3): printable ASCII but "+", "=" and "\".
_QCHAR = re.compile(r"[\x21-\x2a\x2c-\x3c\x3e-\x5b\x5d-\x7e]")
_NEEDS_XTEXT_ESCAPE = re.compile(r"[^\x21-\x2a\x2c-\x3c\x3e-\x7e]")


def isXtext(value: str) -> bool:
    """
    Whether C{value} is xtext (hexadecimal digits of either case).
    """
    return _XTEXT.match(value) is not None


def decodeXtext(value: str) -> str | None:
    """
    The text an xtext value encodes (octets above 127 as Latin-1 code
    points, so nothing is lost), or L{None} if C{value} is not xtext.
    """
    if not isXtext(value):
        return None
    if "+" not in value:
        return value
    return _HEXCHAR.sub(lambda m: chr(int(m.group(1), 16)), value)


def encodeXtext(text: str) -> str:
    """
    C{text} as xtext: the inverse of L{decodeXtext} (a character above 255
    is encoded as its UTF-8 octets).
    """
    if _NEEDS_XTEXT_ESCAPE.search(text) is None:
        return text
    out: list[str] = []
    for character in text:
        if _NEEDS_XTEXT_ESCAPE.match(character):
            octets = character.encode("latin-1" if ord(character) < 256 else "utf-8")
            out.extend(f"+{octet:02X}" for octet in octets)
        else:
            out.append(character)
    return "".join(out)


def decodeUTF8Address(value: str, unitext: bool) -> str | None:
    """
    The address of an C{ORCPT=utf-8;...} value.

    @param unitext: whether non-ASCII characters may appear as they are
        (utf-8-addr-unitext: only in a transaction with SMTPUTF8).
    @return: the address, or L{None} if C{value} is not in the form (an
        escape of a US-ASCII printable character other than C{+}, C{=} and
        C{\\} is not, RFC 6533 3; nor is a control character).
    """
    out = []
    position = 0
    length = len(value)
    if not value:
        return None
    while position < length:
        character = value[position]
        if character == "\\":
            match = _EMBEDDED.match(value, position)
            if match is None:
                return None
            point = int(match.group(1), 16)
            if point > 0x10FFFF or 0xD800 <= point <= 0xDFFF or point < 0x20 or point == 0x7F:
                return None
            if point < 0x80 and _QCHAR.match(chr(point)):
                return None
            out.append(chr(point))
            position = match.end()
            continue
        if _QCHAR.match(character) or (
            unitext and ord(character) > 0x7F and character.isprintable()
        ):
            out.append(character)
            position += 1
            continue
        return None
    return "".join(out)


def encodeUTF8Address(address: str) -> str:
    """
    C{address} as utf-8-addr-xtext (US-ASCII only): what an C{ORCPT=utf-8;}
    carries to a server without SMTPUTF8.
    """
    return "".join(c if _QCHAR.match(c) else f"\\x{{{ord(c):X}}}" for c in address)
