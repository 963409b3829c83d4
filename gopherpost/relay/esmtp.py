# -*- test-case-name: tests.test_relay_esmtp -*-
"""
The relay's side of SMTPUTF8 (RFC 6531) and DSN (RFC 3461).

  - L{relayMetadata}: the part of an envelope's metadata the relay keeps in
    its state (whether the message came with SMTPUTF8, the DSN parameters).
  - L{relayEnvelope}: one message for the client session, with them.
  - L{utf8Refusal}: a message that needs SMTPUTF8 (a UTF-8 envelope address
    or header section) and a server that does not offer it: the text of the
    permanent failure, C{5.6.7} (RFC 6531 3.2: never downgraded).
  - L{mailParameters} and L{rcptParameters}: what is added to MAIL and RCPT
    for a server: C{SMTPUTF8} when the message needs it, and with DSN
    offered C{RET}, C{ENVID}, C{NOTIFY} and C{ORCPT} as the sender gave
    them (then the next hop, not GopherPost, reports success and delay).
  - L{wantsSuccessNotice} and L{dueDelayWarnings}: when GopherPost itself
    reports a success (C{Action: relayed}, the next hop lacks DSN) or a
    delay (C{Action: delayed}, once, after C{SMTP_DELAY_WARNING}).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gopherpost.esmtp.dsnparams import DSNRequest
from gopherpost.esmtp.idn import toALabel
from gopherpost.esmtp.metadata import DSN, REQUIRETLS, SMTPUTF8
from gopherpost.esmtp.smtputf8 import needsSMTPUTF8
from gopherpost.relay.transaction import Envelope

__all__ = [
    "relayMetadata",
    "relayEnvelope",
    "headerSection",
    "asciiForm",
    "messageNeedsSMTPUTF8",
    "utf8Refusal",
    "mailParameters",
    "rcptParameters",
    "DELAY_WARNED",
    "wantsSuccessNotice",
    "dueDelayWarnings",
]

_KEPT = (SMTPUTF8, REQUIRETLS, DSN)


def relayMetadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """
    The keys of an envelope's metadata the relay needs (C{{}} for a plain
    message).
    """
    if not metadata:
        return {}
    return {key: metadata[key] for key in _KEPT if key in metadata}


def relayEnvelope(
    sender: str,
    recipients: tuple[str, ...],
    content: bytes,
    esmtp: Mapping[str, Any],
    requireTLS: bool = False,
) -> Envelope:
    """
    The client session's L{Envelope} of one message.

    @param esmtp: what L{relayMetadata} kept.
    @param requireTLS: send it with C{REQUIRETLS} (the transport security
        policy decided the session qualifies; L{gopherpost.tlspolicy}).
    """
    if not esmtp:
        return Envelope(sender, recipients, content, requireTLS=requireTLS)
    request = DSNRequest.fromMetadata(esmtp)
    return Envelope(
        sender,
        recipients,
        content,
        smtputf8=esmtp.get(SMTPUTF8) is True,
        dsn=request if request.anyParameter else None,
        requireTLS=requireTLS,
    )


def headerSection(content: bytes) -> bytes:
    """
    The header section of a message (all of it when it has no body).
    """
    end = content.find(b"\n\n")
    crlf = content.find(b"\r\n\r\n")
    if crlf >= 0 and (end < 0 or crlf < end):
        return content[:crlf]
    return content if end < 0 else content[:end]


def asciiForm(address: str) -> str | None:
    """
    C{address} as US-ASCII for a server without SMTPUTF8: as it is, or an
    ASCII local part at an internationalised domain with the domain in
    A-labels (the same mailbox, no downgrade); L{None} for a UTF-8 local
    part or a domain that has no A-labels.
    """
    if address.isascii():
        return address
    localPart, at, domain = address.rpartition("@")
    if not at or not localPart.isascii():
        return None
    aLabels = toALabel(domain)
    return None if aLabels is None else f"{localPart}@{aLabels}"


def messageNeedsSMTPUTF8(envelope: Envelope, recipients: Sequence[str]) -> bool:
    """
    Whether C{envelope}, sent to C{recipients}, needs SMTPUTF8: a UTF-8
    address, or (for a message received with SMTPUTF8) a UTF-8 header
    section.  8-bit headers of a message received without SMTPUTF8 are
    the legacy kind and go as they always went.
    """
    headers = headerSection(envelope.message) if envelope.smtputf8 else b""
    return needsSMTPUTF8(envelope.sender, recipients, headers)


def utf8Refusal(envelope: Envelope, host: str) -> str | None:
    """
    Why the whole message cannot go to C{host}, which lacks SMTPUTF8, or
    L{None}: a UTF-8 sender or header section (a UTF-8 recipient fails
    alone, see the session).
    """
    if not envelope.sender.isascii():
        what = "sender"
    elif envelope.smtputf8 and not headerSection(envelope.message).isascii():
        what = "header section"
    else:
        return None
    return f"the message has a non-ASCII {what} and {host} does not offer SMTPUTF8"


def mailParameters(envelope: Envelope, extensions: Mapping[str, object]) -> list[str]:
    """
    The DSN parameters of MAIL for a server with C{extensions}.
    """
    request = envelope.dsn
    if request is None or "DSN" not in extensions:
        return []
    parameters = []
    if request.ret is not None:
        parameters.append(f"RET={request.ret}")
    if request.envelopeId is not None:
        parameters.append(f"ENVID={request.envelopeId}")
    return parameters


def rcptParameters(
    envelope: Envelope, recipient: str, extensions: Mapping[str, object], smtputf8: bool
) -> str:
    """
    The DSN parameters of one RCPT (with a leading space), or C{""}.

    @param smtputf8: whether the transaction has SMTPUTF8 (a UTF-8 ORCPT
        is otherwise sent as utf-8-addr-xtext).
    """
    request = envelope.dsn
    if request is None or "DSN" not in extensions:
        return ""
    asked = request.forRecipient(recipient)
    parameters = []
    if asked.notify is not None:
        parameters.append("NOTIFY=" + ",".join(asked.notify))
    orcpt = asked.orcptParameter(smtputf8)
    if orcpt is not None:
        parameters.append(f"ORCPT={orcpt}")
    return "".join(" " + p for p in parameters)


# GopherPost's own success and delay DSNs (RFC 3461 4.1)

#: The key in L{MessageState.esmtp} of the recipients already warned of a
#: delay (one warning each).
DELAY_WARNED = "delayWarned"


def wantsSuccessNotice(request: DSNRequest, recipient: str, dsnOffered: bool) -> bool:
    """
    Whether the sender is to be told, by us, that C{recipient} was relayed:
    it asked (NOTIFY=SUCCESS) and the next hop did not take the request on
    (it does not offer DSN).
    """
    return not dsnOffered and request.forRecipient(recipient).notifySuccess


def dueDelayWarnings(
    esmtp: dict[str, Any],
    received: float,
    now: float,
    delayWarning: float,
    waiting: Sequence[str],
) -> list[str]:
    """
    The recipients of C{waiting} whose sender asked to hear of a delay
    (NOTIFY=DELAY), waiting for C{delayWarning} seconds or more and not
    warned yet; they are marked warned in C{esmtp}.
    """
    if not delayWarning or now - received < delayWarning or DSN not in esmtp:
        return []
    request = DSNRequest.fromMetadata(esmtp)
    warned = esmtp.get(DELAY_WARNED)
    done = set(warned) if isinstance(warned, list) else set()
    due = [r for r in waiting if r not in done and request.forRecipient(r).notifyDelay]
    if due:
        esmtp[DELAY_WARNED] = sorted(done | set(due))
    return due
