# -*- test-case-name: tests.test_framing -*-
"""
SMTP input framing: bytes from the client in, command lines and message
content out.  No I/O, no SMTP state beyond the framing mode.

The protocol L{Framer.feed}s every read and takes L{Event}s with
L{Framer.next} until it returns L{None}; the session decides what they mean
and switches the mode (L{Framer.startData}, L{Framer.startRaw}).

Every verdict depends on the bytes only, never on how they were split into
reads:

  - A command line ends at LF (a CR before it is dropped) and may hold 510
    octets before its CRLF (RFC 5321 4.5.3.1.4: 512 with it); a longer one
    is L{LINE_TOO_LONG} and the session goes on, one longer than
    L{DISCARD_LIMIT} is L{INPUT_TOO_LONG} and the session should end.  A
    line without LF is never buffered past those bounds.
  - In message content only CRLF.CRLF ends the message, and a bare CR or
    bare LF is stored as CRLF, so one DATA is one unambiguous message (SMTP
    smuggling, CVE-2023-51764 class).  Dot-stuffing is undone for lines that
    follow a CRLF (RFC 5321 4.5.2).  A stored line may hold 998 octets
    before its CRLF (RFC 5321 4.5.3.1.6, counted after unstuffing: a
    stuffed dot is transparency, not content); a longer one makes the
    message L{BODY_LINE_TOO_LONG}, which is reported once, and its content
    is then no longer stored, but the end of data is still found, so
    nothing after an over-long line is ever run as a command.
  - L{Framer.startRaw} reads exactly N octets untouched (for BDAT); the
    session stores them through the same checks (L{normaliseLineEnds},
    L{LineLengths}).
  - L{Framer.expectLongLine} lets the next command line hold up to
    L{AUTH_RESPONSE_LIMIT} octets: an AUTH exchange's response (RFC 4954
    section 4); the usual limit applies again after it.

Message content leaves in L{BODY} events of whole stored lines or parts of
lines, as large as the reads allow, with at most two octets held back (a CR
that may begin a CRLF, a dot that may begin the end of data): the work per
read is a handful of C-level scans, none per line in Python.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = [
    "Framer",
    "Event",
    "LineLengths",
    "normaliseLineEnds",
    "LINE",
    "LINE_TOO_LONG",
    "INPUT_TOO_LONG",
    "BODY",
    "BODY_LINE_TOO_LONG",
    "DATA_END",
    "RAW",
    "RAW_END",
    "COMMAND_LINE_LIMIT",
    "TEXT_LINE_LIMIT",
    "DISCARD_LIMIT",
    "AUTH_RESPONSE_LIMIT",
]

#: RFC 5321 4.5.3.1.4: a command line is at most 512 octets with its CRLF.
COMMAND_LINE_LIMIT = 512
#: RFC 5321 4.5.3.1.6: a text line is at most 1000 octets with its CRLF.
TEXT_LINE_LIMIT = 1000
#: A command line longer than this (before its CRLF) ends the session.
DISCARD_LIMIT = 16 * 1024
#: RFC 4954 section 4: an AUTH response line may hold 12,288 octets.
AUTH_RESPONSE_LIMIT = 12288

_COMMAND_CONTENT = COMMAND_LINE_LIMIT - 2
_TEXT_CONTENT = TEXT_LINE_LIMIT - 2

#: A command line (without its line end).
LINE = "line"
#: A command line over the limit (the session goes on).
LINE_TOO_LONG = "line-too-long"
#: A command line over L{DISCARD_LIMIT}: the session should end.
INPUT_TOO_LONG = "input-too-long"
#: Message content, dot-unstuffed, line ends as CRLF.
BODY = "body"
#: A line of the message is over the limit (once per message).
BODY_LINE_TOO_LONG = "body-line-too-long"
#: The end of the message (CRLF.CRLF); command lines follow.
DATA_END = "data-end"
#: Raw octets of a L{Framer.startRaw} read.
RAW = "raw"
#: The last of a raw read's octets was delivered; command lines follow.
RAW_END = "raw-end"

_COMMAND, _DATA, _RAW = "command", "data", "raw"

_LINE_BREAKS = re.compile(rb"\r\n|\r|\n")
#: A CR that no LF follows (also one at the end), and an LF no CR precedes.
_BARE_CR = re.compile(rb"\r(?!\n)")
_BARE_LF = re.compile(rb"\n(?<!\r\n)")


class Event(NamedTuple):
    """
    One framing event.

    @ivar kind: L{LINE}, L{LINE_TOO_LONG}, L{INPUT_TOO_LONG}, L{BODY},
        L{BODY_LINE_TOO_LONG}, L{DATA_END}, L{RAW} or L{RAW_END}.
    @ivar data: the line or content (empty for the others).
    """

    kind: str
    data: bytes = b""


_LINE_TOO_LONG = Event(LINE_TOO_LONG)
_INPUT_TOO_LONG = Event(INPUT_TOO_LONG)
_BODY_LINE_TOO_LONG = Event(BODY_LINE_TOO_LONG)
_DATA_END = Event(DATA_END)
_RAW_END = Event(RAW_END)


def normaliseLineEnds(piece: bytes) -> bytes:
    """
    C{piece} with every bare CR and bare LF made a CRLF (a CR at the end is
    taken as bare: hold it back if more may follow).
    """
    # Two searches that each look only at the CRs (the LFs), skipping the
    # octets between them in C: no copy, no work per line in Python (on
    # 50 KiB of 80-octet lines, 0.6 times the time of removing the CRLFs and
    # looking at what is left).
    if _BARE_CR.search(piece) is None and _BARE_LF.search(piece) is None:
        return piece
    return _LINE_BREAKS.sub(b"\r\n", piece)


class LineLengths:
    """
    Checks that the lines of message content, given in pieces with CRLF
    line ends only, stay within L{TEXT_LINE_LIMIT}.
    """

    def __init__(self) -> None:
        #: The length of the line in progress.
        self._lineLength = 0

    def reset(self) -> None:
        """
        A new message starts.
        """
        self._lineLength = 0

    def fits(self, piece: bytes) -> bool:
        """
        Whether the lines of C{piece} stay within the limit, continuing the
        line in progress.

        A line of at most 998 octets has its LF within 1,000 octets of its
        start, so the last LF in each 1,000-octet window starts the next
        one: a few C{rfind}s per 100 KiB instead of a look at every line.
        """
        first = piece.find(b"\n")
        if first < 0:
            self._lineLength += len(piece)
            return self._lineLength <= _TEXT_CONTENT
        # piece[first - 1] is the CR of the first CRLF.
        if self._lineLength + first - 1 > _TEXT_CONTENT:
            return False
        last = piece.rfind(b"\n")
        start = first + 1
        rfind = piece.rfind
        while last - start >= TEXT_LINE_LIMIT:
            lf = rfind(b"\n", start, start + TEXT_LINE_LIMIT)
            if lf < 0:
                return False
            start = lf + 1
        self._lineLength = len(piece) - last - 1
        return self._lineLength <= _TEXT_CONTENT


class Framer:
    """
    Turns the client's bytes into L{Event}s.

    @ivar mode: C{"command"}, C{"data"} or C{"raw"}.
    """

    def __init__(self) -> None:
        self.mode = _COMMAND
        #: Unconsumed input is C{_buffer[_offset:]}: a read is worked
        #: through without copying what is left after each line.
        self._buffer = b""
        self._offset = 0
        #: Octets of the current over-long command line already dropped.
        self._discarded = 0
        #: Octets the next command line may hold before its line end.
        self._lineLimit = _COMMAND_CONTENT
        # DATA state: whether the content consumed so far ends with CRLF
        # (or nothing was consumed yet), the lengths of the stored lines,
        # and whether content is still checked and delivered.
        self._afterCRLF = True
        self._lines = LineLengths()
        self._storing = True
        self._failed = False
        self._rawLeft = 0

    @property
    def buffered(self) -> int:
        """
        Octets received and not consumed yet.
        """
        return len(self._buffer) - self._offset

    def feed(self, data: bytes) -> None:
        """
        Add a read's bytes.
        """
        if self._offset >= len(self._buffer):
            self._buffer = data
        else:
            self._buffer = self._buffer[self._offset :] + data
        self._offset = 0

    def discard(self) -> int:
        """
        Drop everything buffered (what a client pipelined after STARTTLS).

        @return: the number of octets dropped.
        """
        count = self.buffered
        self._buffer = b""
        self._offset = 0
        self._discarded = 0
        return count

    def expectLongLine(self, limit: int = AUTH_RESPONSE_LIMIT) -> None:
        """
        The next command line may hold C{limit} octets before its line end
        (an AUTH response); then the usual limit again.
        """
        self._lineLimit = min(limit, DISCARD_LIMIT)

    def startData(self) -> None:
        """
        Read message content, up to CRLF.CRLF.
        """
        self.mode = _DATA
        self._afterCRLF = True
        self._lines.reset()
        self._storing = True
        self._failed = False

    def stopStoring(self) -> None:
        """
        The message failed (too big, a write error): keep looking for its
        end, but deliver no more content.
        """
        self._storing = False

    def startRaw(self, count: int) -> None:
        """
        Read exactly C{count} octets untouched (BDAT), then command lines.
        """
        self.mode = _RAW
        self._rawLeft = count

    def next(self) -> Event | None:
        """
        The next event, or L{None} when more input is needed.
        """
        if self.mode == _DATA:
            return self._nextData()
        if self.mode == _COMMAND:
            return self._nextLine()
        return self._nextRaw()

    # Command lines

    def _nextLine(self) -> Event | None:
        buf, start = self._buffer, self._offset
        end = buf.find(b"\n", start)
        if end < 0:
            size = len(buf) - start
            if size == 0:
                return None
            # Content so far; a final CR may be half of the CRLF.
            content = self._discarded + size - (1 if buf.endswith(b"\r") else 0)
            if content > DISCARD_LIMIT:
                return self._tooLong()
            if content > self._lineLimit:
                # Keep the last octet (it may be a CR), drop the rest.
                self._discarded += size - 1
                self._buffer = buf[-1:]
                self._offset = 0
            return None
        self._offset = end + 1
        if end > start and buf[end - 1] == 13:
            lineEnd = end - 1
        else:
            lineEnd = end
        length = self._discarded + lineEnd - start
        if self._discarded:
            self._discarded = 0
        limit, self._lineLimit = self._lineLimit, _COMMAND_CONTENT
        if length > DISCARD_LIMIT:
            return self._tooLong()
        if length > limit:
            return _LINE_TOO_LONG
        return Event(LINE, buf[start:lineEnd])

    def _tooLong(self) -> Event:
        self._buffer = b""
        self._offset = 0
        self._discarded = 0
        self._lineLimit = _COMMAND_CONTENT
        return _INPUT_TOO_LONG

    # Message content

    def _nextData(self) -> Event | None:
        while True:
            buf, start = self._buffer, self._offset
            size = len(buf)
            if start >= size:
                return None
            if self._afterCRLF and buf[start] == 46:  # "."
                if buf.startswith(b".\r\n", start):
                    self._offset = start + 3
                    self.mode = _COMMAND
                    return _DATA_END
                if size - start < 3 and b".\r\n".startswith(buf[start:]):
                    return None
            # One scan finds the end of data and whether any line after
            # the first starts with a dot (to be unstuffed).
            stuffed = False
            end = buf.find(b"\r\n.", start)
            while end >= 0:
                after = buf[end + 3 : end + 5]
                if after == b"\r\n" or after == b"\r" or not after:
                    break
                stuffed = True
                end = buf.find(b"\r\n.", end + 3)
            if end >= 0:
                # Up to the CRLF before the dot; the next round sees the
                # end of data or, if it is still undecided ("\r\n." or
                # "\r\n.\r" at the end of the read), waits for more.
                self._offset = end + 2
                piece = buf[start : end + 2]
            elif buf.endswith(b"\r"):
                # Hold back a final CR: it may begin a CRLF.
                if size - 1 == start:
                    return None
                self._offset = size - 1
                piece = buf[start : size - 1]
            else:
                self._offset = size
                piece = buf[start:] if start else buf
            event = self._content(piece, stuffed)
            if event is not None:
                return event

    def _content(self, piece: bytes, stuffed: bool) -> Event | None:
        """
        Unstuff, normalise and check one piece of raw content.

        @return: the event to deliver, or L{None} if there is none.
        """
        if not piece:
            return None
        afterCRLF = self._afterCRLF
        self._afterCRLF = piece.endswith(b"\r\n")
        if not self._storing or self._failed:
            return None
        if afterCRLF and piece[0] == 46:
            piece = piece[1:]
        if stuffed:
            piece = piece.replace(b"\r\n.", b"\r\n")
        if not piece:
            return None
        piece = normaliseLineEnds(piece)
        if not self._lines.fits(piece):
            self._failed = True
            return _BODY_LINE_TOO_LONG
        return Event(BODY, piece)

    # Raw octets

    def _nextRaw(self) -> Event | None:
        if self._rawLeft == 0:
            self.mode = _COMMAND
            return _RAW_END
        buf, start = self._buffer, self._offset
        available = len(buf) - start
        if available == 0:
            return None
        take = min(available, self._rawLeft)
        self._offset = start + take
        self._rawLeft -= take
        return Event(RAW, buf[start : start + take])
