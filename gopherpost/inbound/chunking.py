# -*- test-case-name: tests.test_chunking -*-
"""
CHUNKING (RFC 3030): the C{BDAT <size> [LAST]} argument and the content of
the chunks of one message.

The framing reads each chunk's octets exactly (L{Framer.startRaw}), so no
chunk octet is ever taken for a command.  L{ChunkedContent} stores them the
way DATA content is stored (L{gopherpost.inbound.framing}): a bare CR or a
bare LF becomes CRLF, also when a CRLF is split between two chunks, and a
line over 998 octets fails the message.  The message is ended by a CRLF
when its last chunk does not end with one.
"""

from __future__ import annotations

import re

from gopherpost.inbound.framing import LineLengths, normaliseLineEnds

__all__ = ["parseBDATArgument", "ChunkedContent", "CHUNK_SIZE_DIGITS"]

#: Digits of a chunk size at most (more than any message could have).
CHUNK_SIZE_DIGITS = 18

_ARGUMENT = re.compile(rb"([0-9]{1,%d})(?:[ \t]+(LAST))?[ \t]*\Z" % CHUNK_SIZE_DIGITS, re.I)


def parseBDATArgument(argument: bytes) -> tuple[int, bool] | None:
    """
    C{(size, last)} of C{BDAT <size> [LAST]}, or L{None} when the argument
    is not that (then where the chunk ends is unknown).
    """
    match = _ARGUMENT.match(argument.strip())
    if match is None:
        return None
    return int(match.group(1)), match.group(2) is not None


class ChunkedContent:
    """
    The content of one message's chunks, checked and normalised.

    @ivar failed: whether a line was over the limit (nothing more is
        given out then).
    """

    def __init__(self) -> None:
        self._lines = LineLengths()
        self._heldCR = False
        self._afterCRLF = True
        self.failed = False

    def feed(self, data: bytes) -> bytes:
        """
        Octets of a chunk in; the content to store out (possibly empty: a
        final CR waits for what follows it).  Once L{failed}, nothing.
        """
        if self.failed or not data:
            return b""
        if self._heldCR:
            data = b"\r" + data
            self._heldCR = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self._heldCR = True
            if not data:
                return b""
        return self._checked(normaliseLineEnds(data))

    def finish(self) -> bytes:
        """
        The last chunk ended: what is left to store (a held CR as CRLF, the
        CRLF that ends the content).
        """
        if self.failed:
            return b""
        if self._heldCR:
            self._heldCR = False
            return self._checked(b"\r\n")
        if self._afterCRLF:
            return b""
        return self._checked(b"\r\n")

    def _checked(self, piece: bytes) -> bytes:
        if not self._lines.fits(piece):
            self.failed = True
            return b""
        self._afterCRLF = piece.endswith(b"\r\n")
        return piece
