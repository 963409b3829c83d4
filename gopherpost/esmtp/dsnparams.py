# -*- test-case-name: tests.test_esmtp_dsnparams -*-
"""
The DSN parameters of RFC 3461: what a sender asks to be told.

  - C{RET=FULL|HDRS} (MAIL): return the whole message or its header section
    in a failure report.
  - C{ENVID=<xtext>} (MAIL): the sender's id of the transaction, at most
    100 characters, reported as C{Original-Envelope-Id}.
  - C{NOTIFY=NEVER} or C{NOTIFY=} a list of C{SUCCESS}, C{FAILURE},
    C{DELAY} (RCPT): when to send a DSN; without it, on failure only.
  - C{ORCPT=<type>;<xtext>} (RCPT): the recipient as the sender first gave
    it, at most 500 characters, reported as C{Original-Recipient}.  The
    C{utf-8} type (RFC 6533) uses its own escapes (L{gopherpost.esmtp.xtext}).

The checks (L{parseNotify}, L{parseReturn}, L{checkEnvelopeId},
L{parseOriginalRecipient}) take the values as received and return L{None}
for a bad one.  L{dsnMetadata} keeps the values of a transaction in its
envelope's metadata (the layout is in L{gopherpost.esmtp.metadata}), and
L{DSNRequest} reads them back for the relay and for GopherPost's own DSNs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gopherpost.esmtp.metadata import DSN
from gopherpost.esmtp.xtext import (
    decodeUTF8Address,
    decodeXtext,
    encodeUTF8Address,
    isXtext,
)

__all__ = [
    "NOTIFY_KEYWORDS",
    "ENVID_LIMIT",
    "ORCPT_LIMIT",
    "parseNotify",
    "parseReturn",
    "checkEnvelopeId",
    "parseOriginalRecipient",
    "dsnMetadata",
    "DSNRequest",
    "RecipientDSN",
]

#: The keywords a NOTIFY list may hold (besides C{NEVER} alone).
NOTIFY_KEYWORDS = ("SUCCESS", "FAILURE", "DELAY")
#: RFC 3461 4.4: characters of an ENVID value at most.
ENVID_LIMIT = 100
#: RFC 3461 4.2: characters of an ORCPT value at most.
ORCPT_LIMIT = 500

_ADDRESS_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]+\Z")


def parseNotify(value: str | None) -> tuple[str, ...] | None:
    """
    A NOTIFY value as its keywords in upper case, in the order given
    (C{("NEVER",)}, or some of L{NOTIFY_KEYWORDS}); L{None} if it is not
    valid (empty, unknown or repeated keywords, NEVER with others).
    """
    if not value:
        return None
    keywords = tuple(item.upper() for item in value.split(","))
    if keywords == ("NEVER",):
        return keywords
    if len(set(keywords)) != len(keywords) or not all(k in NOTIFY_KEYWORDS for k in keywords):
        return None
    return keywords


def parseReturn(value: str | None) -> str | None:
    """
    A RET value in upper case (C{"FULL"} or C{"HDRS"}), or L{None} if it is
    neither.
    """
    if value is None:
        return None
    upper = value.upper()
    return upper if upper in ("FULL", "HDRS") else None


def checkEnvelopeId(value: str | None) -> bool:
    """
    Whether C{value} is a valid ENVID: xtext of at most L{ENVID_LIMIT}
    characters that decodes to printable US-ASCII.
    """
    if not value or len(value) > ENVID_LIMIT:
        return False
    decoded = decodeXtext(value)
    return decoded is not None and _PRINTABLE_ASCII.match(decoded) is not None


def parseOriginalRecipient(value: str | None, smtputf8: bool = False) -> tuple[str, str] | None:
    """
    An ORCPT value as C{(type, address)}, the type in lower case and the
    address decoded; L{None} if it is not valid.

    @param smtputf8: whether the transaction has SMTPUTF8: a C{utf-8}
        address may then carry its non-ASCII characters as they are.
    """
    if not value or len(value) > ORCPT_LIMIT:
        return None
    addressType, separator, encoded = value.partition(";")
    if not separator or not _ADDRESS_TYPE.match(addressType) or not encoded:
        return None
    addressType = addressType.lower()
    if addressType == "utf-8":
        address = decodeUTF8Address(encoded, unitext=smtputf8)
        if address is None or not address.isprintable():
            return None
        return addressType, address
    if not isXtext(encoded):
        return None
    decoded = decodeXtext(encoded)
    if decoded is None or _PRINTABLE_ASCII.match(decoded) is None:
        return None
    return addressType, decoded


def dsnMetadata(
    ret: str | None,
    envelopeId: str | None,
    recipients: Iterable[tuple[str, tuple[str, ...] | None, str | None]],
) -> dict[str, Any]:
    """
    The C{"dsn"} entry of an envelope's metadata, or C{{}} when the
    transaction had no DSN parameter.

    @param ret: the RET value (upper case) or L{None}.
    @param envelopeId: the ENVID as given, or L{None}.
    @param recipients: C{(address, notify, orcpt)} of each stored
        recipient: the NOTIFY keywords (or L{None}) and the ORCPT as given
        (or L{None}).
    """
    entry: dict[str, Any] = {}
    if ret is not None:
        entry["ret"] = ret
    if envelopeId is not None:
        entry["envid"] = envelopeId
    perRecipient: dict[str, dict[str, str]] = {}
    for address, notify, orcpt in recipients:
        values: dict[str, str] = {}
        if notify is not None:
            values["notify"] = ",".join(notify)
        if orcpt is not None:
            values["orcpt"] = orcpt
        if values:
            perRecipient[address] = values
    if perRecipient:
        entry["recipients"] = perRecipient
    return {DSN: entry} if entry else {}


@dataclass(frozen=True)
class RecipientDSN:
    """
    What the sender asked about one recipient.

    @ivar notify: the NOTIFY keywords, or L{None} when none were given
        (then failures only are reported, RFC 3461 4.1).
    @ivar orcpt: the ORCPT value as received, or L{None}.
    """

    notify: tuple[str, ...] | None = None
    orcpt: str | None = None

    @property
    def notifyFailure(self) -> bool:
        """
        Whether a failure is reported (the default).
        """
        return self.notify is None or "FAILURE" in self.notify

    @property
    def notifyDelay(self) -> bool:
        """
        Whether a delay is reported (only when asked for).
        """
        return self.notify is not None and "DELAY" in self.notify

    @property
    def notifySuccess(self) -> bool:
        """
        Whether a successful delivery is reported (only when asked for).
        """
        return self.notify is not None and "SUCCESS" in self.notify

    @property
    def originalRecipient(self) -> str | None:
        """
        The C{Original-Recipient} of a DSN report as C{"type;address"},
        US-ASCII: the address decoded, but a C{utf-8} one as
        utf-8-addr-xtext (RFC 6533 3); L{None} without a (valid) ORCPT.
        """
        parsed = parseOriginalRecipient(self.orcpt, smtputf8=True)
        if parsed is None:
            return None
        addressType, address = parsed
        if addressType == "utf-8":
            return f"utf-8;{encodeUTF8Address(address)}"
        return f"{addressType};{address}"

    def orcptParameter(self, smtputf8: bool) -> str | None:
        """
        The ORCPT value to pass on to the next hop, or L{None}.

        @param smtputf8: whether the next transaction has SMTPUTF8; without
            it a C{utf-8} address goes as utf-8-addr-xtext.
        """
        if self.orcpt is None:
            return None
        if smtputf8 or self.orcpt.isascii():
            return self.orcpt
        parsed = parseOriginalRecipient(self.orcpt, smtputf8=True)
        if parsed is None:
            return None
        return f"{parsed[0]};{encodeUTF8Address(parsed[1])}"


_NO_REQUEST = RecipientDSN()


@dataclass(frozen=True)
class DSNRequest:
    """
    The DSN parameters of a stored message (from its metadata).

    @ivar ret: C{"FULL"}, C{"HDRS"} or L{None}.
    @ivar envelopeId: the ENVID as received (xtext), or L{None}.
    @ivar recipients: per recipient address, its L{RecipientDSN}.
    """

    ret: str | None = None
    envelopeId: str | None = None
    recipients: Mapping[str, RecipientDSN] | None = None

    @classmethod
    def fromMetadata(cls, metadata: Mapping[str, Any] | None) -> DSNRequest:
        """
        Read the C{"dsn"} entry of an envelope's metadata (missing or
        malformed parts count as not given).
        """
        entry = (metadata or {}).get(DSN)
        if not isinstance(entry, Mapping):
            return _EMPTY
        ret = parseReturn(entry.get("ret")) if isinstance(entry.get("ret"), str) else None
        envid = entry.get("envid")
        envelopeId = envid if isinstance(envid, str) and checkEnvelopeId(envid) else None
        recipients: dict[str, RecipientDSN] = {}
        raw = entry.get("recipients")
        if isinstance(raw, Mapping):
            for address, values in raw.items():
                if not isinstance(values, Mapping):
                    continue
                notify = values.get("notify")
                orcpt = values.get("orcpt")
                recipients[address] = RecipientDSN(
                    parseNotify(notify) if isinstance(notify, str) else None,
                    orcpt if isinstance(orcpt, str) else None,
                )
        return cls(ret, envelopeId, recipients or None)

    @property
    def returnFull(self) -> bool:
        """
        Whether a failure report returns the whole message (C{RET=FULL}).
        """
        return self.ret == "FULL"

    @property
    def envelopeIdText(self) -> str | None:
        """
        The ENVID decoded, for C{Original-Envelope-Id}.
        """
        if self.envelopeId is None:
            return None
        return decodeXtext(self.envelopeId)

    def forRecipient(self, address: str) -> RecipientDSN:
        """
        What was asked about the recipient C{address} (as stored in the
        envelope).
        """
        if self.recipients is None:
            return _NO_REQUEST
        return self.recipients.get(address, _NO_REQUEST)

    @property
    def anyParameter(self) -> bool:
        """
        Whether the sender gave any DSN parameter.
        """
        return self.ret is not None or self.envelopeId is not None or bool(self.recipients)


_EMPTY = DSNRequest()
