# -*- test-case-name: tests.test_filters_envelope -*-
"""
What a content filter decides about a message: a L{Verdict}.

A verdict has a disposition (accept, reject, tempfail, discard), the reply
for a refusal, the edits to make when the message is accepted (header
fields, body, recipients, sender), an optional quarantine note, and what
the filter found (a spam score, details for the envelope's metadata).

Edits are values (L{AddHeader}, L{InsertHeader}, L{ChangeHeader},
L{DeleteHeader}, L{ReplaceBody}, L{AddRecipient}, L{DeleteRecipient},
L{ChangeSender}); L{gopherpost.filters.envelope.FilterMessage} applies
them.  Header names and values are bytes as they go into the message:
a value is what follows the colon (C{b" text"} or C{b"text"}; the leading
space is added when missing), lines of a folded value separated by C{\\n}
or C{\\r\\n} and continued with white space.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "Disposition",
    "Verdict",
    "Modification",
    "AddHeader",
    "InsertHeader",
    "ChangeHeader",
    "DeleteHeader",
    "ReplaceBody",
    "AddRecipient",
    "DeleteRecipient",
    "ChangeSender",
    "RESULTS",
]


class Disposition(enum.Enum):
    """
    What happens to the message (or the command).

    @cvar ACCEPT: go on; the verdict's edits are made.
    @cvar REJECT: refuse it with a 5xx reply.
    @cvar TEMPFAIL: refuse it with a 4xx reply (the client tries again).
    @cvar DISCARD: tell the client 250 and throw the message away.
    """

    ACCEPT = "accept"
    REJECT = "reject"
    TEMPFAIL = "tempfail"
    DISCARD = "discard"


#: The C{result} label values of C{smtp_filter_results_total}.
RESULTS = (
    "accept",
    "reject",
    "tempfail",
    "discard",
    "quarantine",
    "skipped",
    "error",
    "timeout",
)


@dataclass(frozen=True)
class AddHeader:
    """
    Append a header field at the end of the header section (milter
    C{SMFIR_ADDHEADER}).
    """

    name: bytes
    value: bytes


@dataclass(frozen=True)
class InsertHeader:
    """
    Insert a header field before the field at C{index} (0: at the top; past
    the end: appended) (milter C{SMFIR_INSHEADER}).
    """

    index: int
    name: bytes
    value: bytes


@dataclass(frozen=True)
class ChangeHeader:
    """
    Replace the value of the C{index}-th field called C{name} (1 for the
    first, any case); when there are fewer, the field is appended (milter
    C{SMFIR_CHGHEADER}; an empty value there deletes, see L{DeleteHeader}).
    """

    name: bytes
    index: int
    value: bytes


@dataclass(frozen=True)
class DeleteHeader:
    """
    Delete fields called C{name} (any case): C{index} 0 deletes all of
    them, C{n} > 0 the n-th, C{-n} the n-th from the end.
    """

    name: bytes
    index: int = 0


@dataclass(frozen=True)
class ReplaceBody:
    """
    The message body becomes C{body} (CRLF line ends).
    """

    body: bytes


@dataclass(frozen=True)
class AddRecipient:
    """
    Add an envelope recipient (with RCPT parameters, C{ESMTP} syntax).
    """

    address: str
    parameters: str = ""


@dataclass(frozen=True)
class DeleteRecipient:
    """
    Remove an envelope recipient (compared without case).
    """

    address: str


@dataclass(frozen=True)
class ChangeSender:
    """
    Change the envelope sender (with MAIL parameters, C{ESMTP} syntax).
    """

    address: str
    parameters: str = ""


Modification = (
    AddHeader
    | InsertHeader
    | ChangeHeader
    | DeleteHeader
    | ReplaceBody
    | AddRecipient
    | DeleteRecipient
    | ChangeSender
)


@dataclass(frozen=True)
class Verdict:
    """
    One filter's decision.

    @ivar disposition: what happens to the message.
    @ivar code: the reply code of a refusal (or the 250 of a discard).
    @ivar text: the reply text, enhanced status code first; lines
        separated by C{\\n}.
    @ivar modifications: the edits to make if the message is accepted.
    @ivar quarantine: a reason to hold the message, or L{None}.
    @ivar score: a spam score, or L{None}.
    @ivar threshold: the filter's own spam threshold, or L{None}.
    @ivar details: what the filter found, JSON-able, for the envelope's
        metadata (e.g. rspamd's action and symbols).
    @ivar result: the metrics label (one of L{RESULTS}); by default from
        the disposition and the quarantine note.
    """

    disposition: Disposition = Disposition.ACCEPT
    code: int = 250
    text: str = "2.0.0 Ok"
    modifications: tuple[Modification, ...] = ()
    quarantine: str | None = None
    score: float | None = None
    threshold: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    result: str = ""

    def __post_init__(self) -> None:
        if not self.result:
            label = self.disposition.value
            if self.disposition is Disposition.ACCEPT and self.quarantine is not None:
                label = "quarantine"
            object.__setattr__(self, "result", label)

    @classmethod
    def accept(cls, modifications: Sequence[Modification] = (), **kwargs: Any) -> Verdict:
        """
        Accept, with edits.
        """
        return cls(Disposition.ACCEPT, modifications=tuple(modifications), **kwargs)

    @classmethod
    def reject(
        cls, code: int = 550, text: str = "5.7.1 Command rejected", **kwargs: Any
    ) -> Verdict:
        """
        Refuse permanently.
        """
        return cls(Disposition.REJECT, code, text, **kwargs)

    @classmethod
    def tempfail(
        cls,
        code: int = 451,
        text: str = "4.7.1 Service unavailable - try again later",
        **kwargs: Any,
    ) -> Verdict:
        """
        Refuse for now.
        """
        return cls(Disposition.TEMPFAIL, code, text, **kwargs)

    @classmethod
    def discard(cls, **kwargs: Any) -> Verdict:
        """
        Accept and throw away.
        """
        return cls(Disposition.DISCARD, 250, "2.0.0 Ok: message discarded", **kwargs)

    @property
    def refuses(self) -> bool:
        """
        Whether the verdict refuses (reject or tempfail).
        """
        return self.disposition in (Disposition.REJECT, Disposition.TEMPFAIL)

    def withResult(self, result: str) -> Verdict:
        """
        This verdict with another metrics label (e.g. C{"timeout"} for a
        failure turned into a tempfail).
        """
        return replace(self, result=result)
