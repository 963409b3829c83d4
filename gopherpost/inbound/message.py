# -*- test-case-name: tests.test_message -*-
"""
The message of one DATA on its way into the spool (L{IncomingMessage}).

Content arrives in pieces from the framing.  The message's own header
section (up to its empty line) is held in memory, so that end-of-data
policies can read the parsed fields and remove some; the body goes on to
the spool's L{MessageWriter} as it arrives.  Our C{Received:} header and the
fields policies add go on top when the message is committed.  A header
section longer than L{HEADER_SECTION_LIMIT} is not held: it is stored as it
is, and policies see no fields.

The content filters see more (L{IncomingMessage.fullHeaderSection}): the
header section as it will be stored, our C{Received:} and the added fields
included, as a milter sees Postfix's; they may replace all of it and the
body (L{IncomingMessage.replaceFullHeaderSection},
L{IncomingMessage.replaceBody}) before the commit.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from gopherpost.inbound.interfaces import IIncomingMessage
from gopherpost.spool import Envelope, MessageWriter

__all__ = ["IncomingMessage", "HEADER_SECTION_LIMIT", "formatHeader", "parseHeaderSection"]

#: Octets of a message's header section held for policies at most.
HEADER_SECTION_LIMIT = 64 * 1024

_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+\Z")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e\t]")


def formatHeader(name: str, value: str) -> bytes:
    """
    One header field, CRLF at the end: C{value}'s C{\\n}s become folds, and
    anything that is not printable US-ASCII becomes C{?}, so a field can
    never be split into two.

    @raise ValueError: if C{name} is not a field name.
    """
    if not _FIELD_NAME.match(name):
        raise ValueError(f"not a header field name: {name!r}")
    lines = [_UNPRINTABLE.sub("?", line.strip()) for line in value.split("\n")]
    return (f"{name}: " + "\r\n\t".join(line for line in lines if line) + "\r\n").encode("ascii")


def _fields(section: bytes) -> list[bytes]:
    """
    The raw fields of a header section, each with its continuation lines
    and CRLF.
    """
    fields: list[bytes] = []
    for line in section.split(b"\r\n")[:-1]:
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line + b"\r\n"
        else:
            fields.append(line + b"\r\n")
    return fields


def _fieldName(raw: bytes) -> str:
    return raw.partition(b":")[0].strip().decode("ascii", "replace").lower()


def _rawValue(raw: bytes) -> str:
    """
    The value of a raw field as text: after the colon, folding kept, the
    final CRLF removed.
    """
    value = raw.partition(b":")[2]
    if value.endswith(b"\r\n"):
        value = value[:-2]
    return value.decode("utf-8", "replace")


def parseHeaderSection(section: bytes) -> list[tuple[str, str]]:
    """
    The fields of a header section as C{(name, value)} text, values
    unfolded (C{utf-8}, undecodable octets replaced).  A line that is not a
    field keeps its text as the name and an empty value.
    """
    parsed = []
    for raw in _fields(section):
        name, colon, value = raw.partition(b":")
        text = value.replace(b"\r\n", b"").strip() if colon else b""
        parsed.append((name.strip().decode("utf-8", "replace"), text.decode("utf-8", "replace")))
    return parsed


@implementer(IIncomingMessage)
class IncomingMessage:
    """
    One incoming message (see the module docstring).

    @param writer: the spool's writer for the content.
    @param queueId: the id it will be stored under.
    @param traceHeader: our C{Received:} header, CRLF at the end.
    @param headers: C{(name, value)} fields policies added before DATA.
    @param commit: called with this message to make it durable.
    @param runInThread: C{runInThread(f) -> Deferred}, for reading a
        spilled body.
    """

    def __init__(
        self,
        writer: MessageWriter,
        queueId: str,
        traceHeader: bytes,
        headers: list[tuple[str, str]],
        commit: Callable[[IncomingMessage], Deferred[Envelope]],
        runInThread: Callable[[Callable[[], bytes]], Deferred[bytes]],
    ) -> None:
        self._writer = writer
        self.queueId = queueId
        self._trace = traceHeader
        self._added = [formatHeader(name, value) for name, value in headers]
        self._commit = commit
        self._runInThread = runInThread
        self._collecting: bytearray | None = bytearray()
        self._section = b""
        self._sectionHeld = True
        self.size = 0
        #: When end-of-data policies must have answered (set by the session).
        self.deadline: float | None = None

    @property
    def writer(self) -> MessageWriter:
        """
        The spool writer holding the content.
        """
        return self._writer

    @property
    def error(self) -> OSError | None:
        """
        The write error that stopped storing the content, or L{None}.
        """
        return self._writer.error

    @property
    def headerSection(self) -> bytes:
        """
        The message's own header section (see L{IReceivedMessage}).
        """
        if self._collecting is not None:
            return bytes(self._collecting)
        return self._section

    @property
    def headers(self) -> list[tuple[str, str]]:
        """
        The parsed fields of the header section.
        """
        return parseHeaderSection(self.headerSection)

    def write(self, data: bytes) -> None:
        """
        Append content (CRLF line ends, dot-unstuffed).
        """
        self.size += len(data)
        collecting = self._collecting
        if collecting is None:
            self._writer.write(data)
            return
        if not collecting and data.startswith(b"\r\n"):
            # No header section at all.
            self._endSection(b"", data)
            return
        searchFrom = max(0, len(collecting) - 3)
        collecting += data
        end = collecting.find(b"\r\n\r\n", searchFrom)
        if end >= 0:
            self._endSection(bytes(collecting[: end + 2]), bytes(collecting[end + 2 :]))
        elif len(collecting) > HEADER_SECTION_LIMIT:
            # Too long to hold: stored as it is, no fields for policies.
            self._sectionHeld = False
            self._endSection(b"", bytes(collecting))

    def _endSection(self, section: bytes, rest: bytes) -> None:
        self._collecting = None
        self._section = section
        self._writer.setHead(self._head())
        if rest:
            self._writer.write(rest)

    def _head(self) -> bytes:
        return self._trace + b"".join(self._added) + self._section

    def addHeader(self, name: str, value: str) -> None:
        """
        Add a field below our C{Received:} header (see L{IReceivedMessage}).
        """
        self._added.append(formatHeader(name, value))
        if self._collecting is None:
            self._writer.setHead(self._head())

    def removeHeaders(self, name: str, predicate: Callable[[str], bool] | None = None) -> int:
        """
        Remove every field called C{name} (whose value C{predicate} accepts,
        if given) from the message's header section.
        """
        if self._collecting is not None:
            self._endSection(bytes(self._collecting), b"")
        wanted = name.lower()
        if wanted.encode("ascii", "replace") not in self._section.lower():
            # No field can have that name (the common case): no parse.
            return 0
        fields = _fields(self._section)
        kept = [
            raw
            for raw in fields
            if _fieldName(raw) != wanted
            or (predicate is not None and not predicate(_rawValue(raw)))
        ]
        removed = len(fields) - len(kept)
        if removed:
            self._section = b"".join(kept)
            self._writer.setHead(self._head())
        return removed

    @property
    def fullHeaderSection(self) -> bytes:
        """
        The header section as it will be stored (see L{IReceivedMessage}).
        """
        return self._trace + b"".join(self._added) + self.headerSection

    def _endCollecting(self) -> None:
        if self._collecting is not None:
            self._endSection(bytes(self._collecting), b"")

    def replaceFullHeaderSection(self, section: bytes) -> None:
        """
        Store the message with C{section} as its whole header section (see
        L{IReceivedMessage}).
        """
        self._endCollecting()
        self._trace = b""
        self._added = []
        self._section = section
        self._writer.setHead(self._head())

    def replaceBody(self, body: bytes) -> Deferred[None]:
        """
        Make C{body} the message's body (see L{IReceivedMessage}); written
        in a thread when the content went to a file.
        """
        self._endCollecting()
        # The empty line after the header section goes with the body (a
        # section too long to hold was never split from it).
        content = b"\r\n" + body if self._sectionHeld else body
        writer = self._writer
        if writer.spilled:
            run: Callable[..., Deferred[Any]] = self._runInThread
            return run(lambda: writer.replaceBody(content))
        writer.replaceBody(content)
        return succeed(None)

    def readBody(self) -> Deferred[bytes]:
        """
        The body, after the header section's empty line.
        """
        if self._collecting is not None:
            return succeed(b"")

        def strip(body: bytes) -> bytes:
            return body[2:] if body.startswith(b"\r\n") else body

        if self._writer.spilled:
            return self._runInThread(self._writer.readBody).addCallback(strip)
        return succeed(strip(self._writer.readBody()))

    def commit(self) -> Deferred[Envelope]:
        """
        Put the header fields in place and make the message durable.
        """
        # The content may have ended within the header section.
        self._endCollecting()
        return self._commit(self)

    def abort(self) -> None:
        """
        Throw the content away.
        """
        self._writer.abort()

    def __repr__(self) -> str:
        return f"<IncomingMessage {self.queueId} size={self.size}>"
