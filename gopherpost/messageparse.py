# -*- test-case-name: tests.test_messageparse -*-
"""
Parsing a stored message into an L{email.message.Message}, as
C{email.parser.BytesParser(policy=...).parsebytes} does, faster for the
common message that is not multipart.

The standard library's C{FeedParser} costs about 60 us for a small message
here, most of it fixed overhead (its line buffer, generators, a pass over
every line of the body), which the index worker and the webhook courier pay
for every message.  L{parseBytes} reads the header block itself and makes
the message with the calls C{FeedParser} makes (C{policy.header_source_parse}
and C{Message.set_raw} for each header, C{set_payload} with the rest of the
text), so the result is the same object; whenever the message is anything
but plain (a multipart or C{message/*} type, no empty line after the
headers, a line there that is not a header, a Unix C{From } line, a first
line that continues nothing, a header without a name) it leaves the message
to C{BytesParser}, which also records the defects.  The tests compare both
on a corpus of plain and broken messages and on a seeded random one.
"""

from __future__ import annotations

import re
from email.message import Message
from email.parser import BytesParser
from email.policy import Policy, compat32

__all__ = ["parseBytes"]

#: One header: a name (FeedParser's header pattern, but not empty), a colon,
#: the rest of its line and the lines that continue it (a space or a tab
#: first).  Atomic groups: the CR of a CRLF is never a line end of its own.
_HEADER = re.compile(
    r"[\041-\071\073-\176]+:[^\r\n]*(?>\r\n|\r|\n)(?:[\t ][^\r\n]*(?>\r\n|\r|\n))*"
)
#: A line end (FeedParser's).
_LINE_END = re.compile(r"\r\n|\r|\n")
_NOT_SIMPLE = ("multipart", "message")


def _slowParser(policy: Policy) -> BytesParser:
    # Making one costs nothing next to the parse it then does.
    return BytesParser(policy=policy)


def _simple(raw: bytes, policy: Policy) -> Message | None:
    """
    The message parsed here, or L{None} when it is not plain (see the
    module's description).
    """
    text = raw.decode("ascii", "surrogateescape")
    headers = []
    position = 0
    match = _HEADER.match(text)
    while match is not None:
        headers.append(match.group())
        position = match.end()
        match = _HEADER.match(text, position)
    # The headers must end at an empty line, which is consumed (as
    # FeedParser does); any other line there is for BytesParser.
    blank = _LINE_END.match(text, position)
    if not headers or blank is None:
        return None
    factory = policy.message_factory or Message
    message: Message = factory(policy=policy)
    # header_source_parse takes a header's lines; joined they give the same
    # name and value (the first line holds the colon and ends in a line end).
    for header in headers:
        message.set_raw(*policy.header_source_parse([header]))
    if message.get_content_maintype() in _NOT_SIMPLE:
        return None
    message.set_payload(text[blank.end() :])
    return message


def parseBytes(raw: bytes, policy: Policy = compat32) -> Message:
    """
    The message C{raw} (as stored: CRLF or LF line ends) parsed under
    C{policy}, equal to what C{BytesParser(policy=policy).parsebytes(raw)}
    returns.
    """
    message = _simple(raw, policy)
    if message is None:
        message = _slowParser(policy).parsebytes(raw)
    return message
