# -*- test-case-name: tests.test_parameters -*-
"""
ESMTP parameters of MAIL and RCPT (RFC 5321 4.1.2), one table per command.

Each table maps an upper-case keyword to a handler that checks the value
and records it on the transaction (MAIL) or the recipient (RCPT), or
returns the reply that refuses it.  An extension adds its keyword to the
table and its EHLO keyword to the session; nothing else changes.

MAIL: C{SIZE} (RFC 1870), C{BODY=7BIT|8BITMIME} (RFC 6152; BINARYMIME is
not offered), C{SMTPUTF8} (RFC 6531), C{RET} and C{ENVID} (RFC 3461),
C{REQUIRETLS} (RFC 8689; only on a TLS session, else C{530 5.7.10}).
RCPT: C{NOTIFY} and C{ORCPT} (RFC 3461).  A bad value is C{501 5.5.4}.

Parameters are an ESMTP feature: after a plain HELO every one is refused
(C{555 5.5.4}), as is an unknown keyword.  Values are printable US-ASCII,
and in a transaction with SMTPUTF8 also UTF-8 (RFC 6531 3.3).  Echoed
client text is escaped (L{printable}).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from gopherpost.esmtp.dsnparams import (
    checkEnvelopeId,
    parseNotify,
    parseOriginalRecipient,
    parseReturn,
)
from gopherpost.inbound.context import EnvelopeRecipient, SessionContext, Transaction
from gopherpost.inbound.replies import Reply, printable

__all__ = [
    "MailParameterHandler",
    "RcptParameterHandler",
    "MAIL_PARAMETERS",
    "RCPT_PARAMETERS",
    "splitParameters",
    "declaresSMTPUTF8",
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
# RFC 6531 3.3: with SMTPUTF8 a value may also hold UTF8-non-ascii.
_UTF8_VALUE = re.compile(rb"[\x21-\x3c\x3e-\x7e\x80-\xff]+\Z")


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


def _smtputf8(value: str | None, transaction: Transaction, context: SessionContext) -> Reply | None:
    if value is not None:
        return Reply(501, "5.5.4 Bad SMTPUTF8 parameter syntax")
    transaction.smtputf8 = True
    return None


def _ret(value: str | None, transaction: Transaction, context: SessionContext) -> Reply | None:
    ret = parseReturn(value)
    if ret is None:
        return Reply(501, "5.5.4 Bad RET parameter syntax")
    transaction.dsnReturn = ret
    return None


def _envid(value: str | None, transaction: Transaction, context: SessionContext) -> Reply | None:
    if value is None or not checkEnvelopeId(value):
        return Reply(501, "5.5.4 Bad ENVID parameter syntax")
    transaction.envelopeId = value
    return None


def _requireTLS(
    value: str | None, transaction: Transaction, context: SessionContext
) -> Reply | None:
    if value is not None:
        return Reply(501, "5.5.4 Bad REQUIRETLS parameter syntax")
    if context.tls is None:
        return Reply(
            530, "5.7.10 REQUIRETLS needs a TLS session: send STARTTLS first", reason="tls-required"
        )
    transaction.requireTLS = True
    return None


def _notify(
    value: str | None,
    recipient: EnvelopeRecipient,
    transaction: Transaction,
    context: SessionContext,
) -> Reply | None:
    keywords = parseNotify(value)
    if keywords is None:
        return Reply(501, "5.5.4 Bad NOTIFY parameter syntax")
    recipient.notify = keywords
    return None


def _orcpt(
    value: str | None,
    recipient: EnvelopeRecipient,
    transaction: Transaction,
    context: SessionContext,
) -> Reply | None:
    if parseOriginalRecipient(value, transaction.smtputf8) is None:
        return Reply(501, "5.5.4 Bad ORCPT parameter syntax")
    recipient.originalRecipient = value
    return None


#: The MAIL parameters we take.
MAIL_PARAMETERS: Mapping[str, MailParameterHandler] = {
    "SIZE": _size,
    "BODY": _body,
    "SMTPUTF8": _smtputf8,
    "RET": _ret,
    "ENVID": _envid,
    "REQUIRETLS": _requireTLS,
}
#: The RCPT parameters we take.
RCPT_PARAMETERS: Mapping[str, RcptParameterHandler] = {"NOTIFY": _notify, "ORCPT": _orcpt}


def declaresSMTPUTF8(raw: bytes) -> bool:
    """
    Whether the parameters of a MAIL command (C{raw}) include C{SMTPUTF8}:
    the path is then parsed as UTF-8 (the checks of the parameters come
    after it).
    """
    if b"SMTPUTF8" not in raw.upper():
        return False
    return any(item.partition(b"=")[0].upper() == b"SMTPUTF8" for item in raw.split())


def splitParameters(
    raw: bytes, context: SessionContext, utf8: bool = False
) -> list[tuple[str, str | None]] | Reply:
    """
    Split C{KEY=value KEY ...} into C{(KEYWORD, value)} pairs.

    @param utf8: whether values may be UTF-8 (SMTPUTF8).
    @return: the pairs, or the reply that refuses the whole command.
    """
    pairs: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    values = _UTF8_VALUE if utf8 else _VALUE
    for item in raw.split():
        keyword, equals, value = item.partition(b"=")
        if not context.extended:
            return Reply(555, f"5.5.4 Unsupported option: {printable(item)} (send EHLO first)")
        if not _KEYWORD.match(keyword) or (equals and not values.match(value)):
            return Reply(501, f"5.5.4 Bad parameter syntax: {printable(item)}")
        name = keyword.decode("ascii").upper()
        if name in seen:
            return Reply(501, f"5.5.4 Duplicate parameter: {name}")
        seen.add(name)
        if not equals:
            pairs.append((name, None))
            continue
        try:
            pairs.append((name, value.decode("utf-8" if utf8 else "ascii")))
        except UnicodeDecodeError:
            return Reply(501, f"5.5.4 Bad parameter syntax (not UTF-8): {printable(item)}")
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
    pairs = splitParameters(raw, context, utf8=declaresSMTPUTF8(raw))
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
    pairs = splitParameters(raw, context, utf8=transaction.smtputf8)
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
