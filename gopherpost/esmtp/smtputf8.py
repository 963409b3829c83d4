# -*- test-case-name: tests.test_esmtp_smtputf8 -*-
"""
Internationalised mail (RFC 6531, 6532): UTF-8 addresses and header
fields.

A message received with C{SMTPUTF8} is stored as received.  It I{needs}
SMTPUTF8 to travel on when its envelope (the sender, a recipient of the
transaction) or its header section has non-ASCII text (L{needsSMTPUTF8});
the relay sends it only to servers that advertise SMTPUTF8 and otherwise
bounces it with C{5.6.7}, never downgrading it (RFC 6531 3.2).

L{addressKey} is the form of an address that identifies its mailbox for
GopherPost (the spool's recipient tokens, repeated recipients): the local
part in NFC and lower case, the domain as its IDNA 2008 A-labels.  An
ASCII address's key is the address in lower case, as it always was.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from gopherpost.esmtp.idn import domainKey

__all__ = ["needsSMTPUTF8", "addressKey", "isInternational"]


def isInternational(address: str) -> bool:
    """
    Whether an address has non-ASCII characters.
    """
    return not address.isascii()


def needsSMTPUTF8(sender: str, recipients: Iterable[str], headerSection: bytes) -> bool:
    """
    Whether a message needs SMTPUTF8 to be relayed: a non-ASCII envelope
    address or 8-bit octets in its header section.

    @param sender: the envelope sender (C{""} for the null sender).
    @param recipients: the recipients of the transaction.
    @param headerSection: the message's header section (a prefix of the
        content holding it is enough).
    """
    if not sender.isascii() or not headerSection.isascii():
        return True
    return any(not recipient.isascii() for recipient in recipients)


def addressKey(address: str) -> str:
    """
    The key of C{address} (see the module docstring).
    """
    if address.isascii():
        return address.lower()
    localPart, at, domain = address.rpartition("@")
    if not at:
        return unicodedata.normalize("NFC", address).lower()
    return unicodedata.normalize("NFC", localPart).lower() + "@" + domainKey(domain)
