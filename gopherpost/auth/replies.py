# -*- test-case-name: tests.test_auth_session -*-
"""
The replies of authenticated submission (RFC 4954, RFC 3463), in the shape
of the inbound chain's C{Reply}.

Each part that answers takes a C{replyType}: called as C{replyType(code,
text, reason=...)}, it makes the reply objects the session writes.  The
default is L{AuthReply}; the inbound session passes its own C{Reply}.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["AuthReply", "ReplyType", "REASON"]

#: The C{reason} of every refusal made here (audit events, metrics).
REASON = "auth"

#: Makes a reply: C{replyType(code, text, reason=...)}.
ReplyType = Callable[..., Any]


@dataclass(frozen=True)
class AuthReply:
    """
    One reply.

    @ivar code: the reply code.
    @ivar text: the text, the enhanced status code first.
    @ivar reason: a short word for refusals.
    @ivar close: whether the connection closes after it.
    """

    code: int
    text: str = ""
    reason: str | None = None
    close: bool = False

    @property
    def isError(self) -> bool:
        """
        Whether it refuses (4xx, 5xx).
        """
        return self.code >= 400

    def closing(self) -> AuthReply:
        """
        This reply, then the close.
        """
        return AuthReply(self.code, self.text, self.reason, True)
