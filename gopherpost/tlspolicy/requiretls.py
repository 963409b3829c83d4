# -*- test-case-name: tests.test_tlspolicy_requiretls -*-
"""
The outbound half of REQUIRETLS (RFC 8689): what the courier and the SMTP
client check for a message that must only travel over verified TLS, and
the C{TLS-Required: No} header that relaxes the policies for one message.

A message is flagged by the inbound side (C{MAIL FROM:<...> REQUIRETLS} on
a TLS session) in its envelope's metadata (L{METADATA_KEY}).  Such a message
is relayed only
  1. to a host whose certificate DANE or MTA-STS checks (MTA-STS
     C{testing} counting as C{enforce}: RFC 8689 4.2.1), over TLS
     (L{IHostTLSPolicy.verifiedForRequireTLS}, asked with
     C{forHost(hostname, requireTLS=True)});
  2. that advertises REQUIRETLS after STARTTLS (L{nextHopRefusal});
  3. with C{REQUIRETLS} on its MAIL command (L{MAIL_PARAMETER}).
Otherwise it is not sent to that host; when no host of the destination
qualifies, it bounces with C{5.7.30} (L{STATUS}), never retried in a weaker
way.

A message with C{TLS-Required: No} (and without REQUIRETLS, which wins) is
delivered as with C{SMTP_OUTBOUND_TLS=may}: DANE and MTA-STS are ignored
for it (C{forHost(hostname, relaxed=True)}).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "METADATA_KEY",
    "MAIL_PARAMETER",
    "EHLO_KEYWORD",
    "STATUS",
    "requiresTLS",
    "hostRefusal",
    "nextHopRefusal",
    "finalFailure",
    "tlsRequiredNo",
]

#: The envelope metadata key the inbound side sets for a REQUIRETLS message.
METADATA_KEY = "requiretls"
#: The MAIL parameter that passes the flag on.
MAIL_PARAMETER = "REQUIRETLS"
#: The EHLO keyword a next hop must advertise.
EHLO_KEYWORD = "REQUIRETLS"
#: The enhanced status of a REQUIRETLS message that cannot be relayed.
STATUS = "5.7.30"

_TLS_REQUIRED_NO = re.compile(
    rb"^TLS-Required[ \t]*:[ \t]*No[ \t]*\r?$", re.IGNORECASE | re.MULTILINE
)
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def requiresTLS(metadata: Mapping[str, Any] | None) -> bool:
    """
    Whether a spooled message was received with REQUIRETLS.
    """
    return bool(metadata and metadata.get(METADATA_KEY))


def hostRefusal(policy: Any) -> str | None:
    """
    Why a REQUIRETLS message may not go to this host (before connecting),
    as a reply line, or L{None} when it may.

    @param policy: the host's L{IHostTLSPolicy}, from C{forHost(...,
        requireTLS=True)}.
    """
    if not policy.allowed:
        return policy.refusal
    if policy.verifiedForRequireTLS:
        return None
    return (
        f"{STATUS} REQUIRETLS: {policy.hostname} cannot be reached over TLS verified by "
        "DANE or MTA-STS"
    )


def nextHopRefusal(hostname: str, extensions: Mapping[str, Any], tlsUsed: bool) -> str | None:
    """
    Why a REQUIRETLS message may not be sent in this session (after the
    EHLO that followed STARTTLS), as a reply line, or L{None}.

    @param extensions: the server's EHLO keywords (upper case).
    @param tlsUsed: whether the session is under TLS.
    """
    if not tlsUsed:
        return f"{STATUS} REQUIRETLS: the session with {hostname} is not under TLS"
    if EHLO_KEYWORD not in extensions:
        return f"{STATUS} REQUIRETLS: {hostname} does not support REQUIRETLS"
    return None


def finalFailure(domain: str, lastReason: str) -> str:
    """
    The bounce reason of a REQUIRETLS message no host of C{domain} could
    take.
    """
    detail = lastReason.split(" ", 1)[1] if lastReason.startswith(STATUS) else lastReason
    return f"{STATUS} REQUIRETLS: no mail exchanger of {domain} qualifies ({detail})"


def tlsRequiredNo(message: bytes) -> bool:
    """
    Whether the message's header carries C{TLS-Required: No} (RFC 8689 5).
    """
    end = _HEADER_END.search(message)
    header = message if end is None else message[: end.start() + 1]
    return _TLS_REQUIRED_NO.search(header) is not None
