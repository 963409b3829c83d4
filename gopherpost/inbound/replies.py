# -*- test-case-name: tests.test_replies -*-
"""
SMTP replies as values.

A session's command handlers return a L{Reply} (or a L{Deferred} of one);
the protocol writes it.  A reply may ask the protocol to do something after
writing it (L{Action}): switch to reading message content, start TLS, or
close the connection.

Reply text goes to the client as printable US-ASCII only (RFC 5321 4.2):
L{Reply.wire} escapes anything else, so client bytes echoed in a reply (an
unknown parameter, an address) can never carry a control character, an
escape sequence or 8-bit data back.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

__all__ = ["Action", "Reply", "Response", "printable", "responseReplies"]

_UNPRINTABLE = re.compile(rb"[^\x20-\x7e]")


def printable(text: bytes | str, limit: int = 100) -> str:
    """
    C{text} made safe to echo in a reply: every octet outside printable
    US-ASCII becomes C{\\xNN}, and the result is cut to C{limit} characters
    (with C{...}).

    @param text: client input, as bytes or text.
    @param limit: the most characters kept.
    """
    raw = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    escaped = _UNPRINTABLE.sub(lambda m: b"\\x%02x" % m.group(0)[0], raw).decode("ascii")
    if len(escaped) > limit:
        return escaped[: limit - 3] + "..."
    return escaped


class Action(enum.Enum):
    """
    What the protocol does after writing a reply.

    @cvar DATA: read message content (after C{354}).
    @cvar STARTTLS: discard buffered input and start TLS (after C{220}).
    @cvar CLOSE: close the connection (after C{221} or C{421}, or a refusal).
    @cvar AUTH_RESPONSE: read the next line as an AUTH response, which may
        be longer than a command (after C{334}).
    """

    NONE = "none"
    DATA = "data"
    STARTTLS = "starttls"
    CLOSE = "close"
    AUTH_RESPONSE = "auth-response"


@dataclass(frozen=True)
class Reply:
    """
    One SMTP reply.

    @ivar code: the three-digit reply code.
    @ivar text: the text, enhanced status code first; several lines are
        separated by C{\\n}.
    @ivar action: what the protocol does after writing it.
    @ivar reason: a short word for audit events and metrics when the reply
        refuses something (C{"access"}, C{"size"}, ...).
    """

    code: int
    text: str = ""
    action: Action = Action.NONE
    reason: str | None = None

    @property
    def isError(self) -> bool:
        """
        Whether the reply refuses the command (4xx or 5xx).
        """
        return self.code >= 400

    @property
    def isPositive(self) -> bool:
        """
        Whether the reply accepts the command (2xx or 3xx).
        """
        return self.code < 400

    @cached_property
    def wire(self) -> bytes:
        """
        The reply as it goes on the wire: each line but the last as
        C{NNN-text}, the last as C{NNN text} (RFC 5321 4.2.1), CRLF after
        each, printable US-ASCII only.  (Computed once per reply: the
        common replies are constants.)
        """
        text = self.text
        if "\n" not in text and text.isascii() and text.isprintable():
            return b"%03d %s\r\n" % (self.code, text.encode("ascii"))
        lines = text.split("\n")
        last = len(lines) - 1
        prefix = "%03d" % (self.code,)
        out = []
        for i, line in enumerate(lines):
            if not line.isascii() or not line.isprintable():
                line = printable(line, limit=1000)
            out.append(prefix + (" " if i == last else "-") + line + "\r\n")
        return "".join(out).encode("ascii")

    def closing(self) -> Reply:
        """
        This reply, followed by closing the connection.
        """
        return Reply(self.code, self.text, Action.CLOSE, self.reason)


#: What a session hands the protocol for one command: one reply, or several
#: in order (a refusal followed by C{421} and the close).
Response = Reply | tuple[Reply, ...]


def responseReplies(response: Response) -> Sequence[Reply]:
    """
    The replies of a L{Response}, in order.
    """
    if isinstance(response, Reply):
        return (response,)
    return response
