# -*- test-case-name: tests.test_parameters -*-
"""
ESMTP parameters of MAIL and RCPT (RFC 5321 4.1.2), one table per command.

Each table maps an upper-case keyword to a handler that checks the value
and records it on the transaction (MAIL) or the recipient (RCPT), or
returns the reply that refuses it.  An extension adds its keyword to the
table (SMTPUTF8, RET, ENVID for MAIL; NOTIFY, ORCPT for RCPT with DSN) and
its EHLO keyword to the session; nothing else changes.

Parameters are an ESMTP feature: after a plain HELO every one is refused
(C{555 5.5.4}), as is an unknown keyword.  Echoed client text is escaped
(L{printable}).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from gopherpost.inbound.context import EnvelopeRecipient, SessionContext, Transaction
from gopherpost.inbound.replies import Reply, printable

__all__ = [
    "MailParameterHandler",
    "RcptParameterHandler",
    "MAIL_PARAMETERS",
    "RCPT_PARAMETERS",
    "splitParameters",
    "applyMailParameters",
    "applyRcptParameters",
]

#: C{handler(value, transaction, context)}: record a MAIL parameter, or
#: return the reply that refuses it.
MailParameterHandler = Callable[[str | None, Transaction, SessionContext], Reply | None]
#: C{handler(value, recipient, transaction, context)}: likewise for RCPT.
RcptParameterHandler = Callable[
    [str | None, EnvelopeRecipient, Transaction, SessionContext], Reply | None
]

_KEYWORD = re.compile(rb"[A-Za-z0-9][A-Za-z0-9-]*\Z")
_VALUE = re.compile(rb"[\x21-\x3c\x3e-\x7e]+\Z")


def _size(value: str | None, transaction: Transaction, context: SessionContext) -> Reply | None:
    if value is None or not value.isdigit() or len(value) > 20:
        return Reply(501, "5.5.4 Bad SIZE parameter syntax")
    transaction.declaredSize = int(value)
    return None


def _body(value: str | None, transaction: Transaction, context: SessionContext) -> Reply | None:
    if value is None or value.upper() not in ("7BIT", "8BITMIME"):
        return Reply(501, "5.5.4 Unsupported BODY parameter")
    transaction.body = value.upper()
    return None


#: The MAIL parameters we take (RFC 1870 SIZE, RFC 6152 BODY).
MAIL_PARAMETERS: Mapping[str, MailParameterHandler] = {"SIZE": _size, "BODY": _body}
#: The RCPT parameters we take (none yet: DSN's NOTIFY and ORCPT come later).
RCPT_PARAMETERS: Mapping[str, RcptParameterHandler] = {}


def splitParameters(raw: bytes, context: SessionContext) -> list[tuple[str, str | None]] | Reply:
    """
    Split C{KEY=value KEY ...} into C{(KEYWORD, value)} pairs.

    @return: the pairs, or the reply that refuses the whole command.
    """
    pairs: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for item in raw.split():
        keyword, equals, value = item.partition(b"=")
        if not context.extended:
            return Reply(555, f"5.5.4 Unsupported option: {printable(item)} (send EHLO first)")
        if not _KEYWORD.match(keyword) or (equals and not _VALUE.match(value)):
            return Reply(501, f"5.5.4 Bad parameter syntax: {printable(item)}")
        name = keyword.decode("ascii").upper()
        if name in seen:
            return Reply(501, f"5.5.4 Duplicate parameter: {name}")
        seen.add(name)
        pairs.append((name, value.decode("ascii") if equals else None))
    return pairs


def applyMailParameters(
    raw: bytes,
    transaction: Transaction,
    context: SessionContext,
    table: Mapping[str, MailParameterHandler] = MAIL_PARAMETERS,
) -> Reply | None:
    """
    Check and record the parameters of a MAIL command on C{transaction}.

    @return: L{None}, or the reply that refuses the command.
    """
    if not raw:
        return None
    pairs = splitParameters(raw, context)
    if isinstance(pairs, Reply):
        return pairs
    for name, value in pairs:
        handler = table.get(name)
        if handler is None:
            return _unsupported(name, value)
        refusal = handler(value, transaction, context)
        if refusal is not None:
            return refusal
        transaction.parameters[name] = value
    return None


def applyRcptParameters(
    raw: bytes,
    recipient: EnvelopeRecipient,
    transaction: Transaction,
    context: SessionContext,
    table: Mapping[str, RcptParameterHandler] = RCPT_PARAMETERS,
) -> Reply | None:
    """
    Check and record the parameters of a RCPT command on C{recipient}.

    @return: L{None}, or the reply that refuses the command.
    """
    if not raw:
        return None
    pairs = splitParameters(raw, context)
    if isinstance(pairs, Reply):
        return pairs
    for name, value in pairs:
        handler = table.get(name)
        if handler is None:
            return _unsupported(name, value)
        refusal = handler(value, recipient, transaction, context)
        if refusal is not None:
            return refusal
        recipient.parameters[name] = value
    return None


def _unsupported(name: str, value: str | None) -> Reply:
    item = name if value is None else f"{name}={value}"
    return Reply(555, f"5.5.4 Unsupported option: {printable(item)}")
