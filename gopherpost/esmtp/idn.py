# -*- test-case-name: tests.test_esmtp_idn -*-
"""
Internationalised domain names (IDNA 2008, RFC 5890-5893).

An SMTPUTF8 address may carry its domain as U-labels
(C{bücher.test}); DNS, local-domain checks and comparisons use the A-labels
(C{xn--bcher-kva.test}).  The conversion is the C{idna} package's IDNA 2008
with the UTS 46 mapping, non-transitional (as browsers and Postfix's
C{smtputf8} support do): upper case is folded, C{ß} stays C{ß}.  A name
IDNA 2008 does not allow (an emoji, a label over 63 octets) has no A-label.
ASCII names are taken as they are, lower-cased: their validity is the
caller's business.
"""

from __future__ import annotations

import functools

import idna

__all__ = ["toALabel", "domainKey", "isValidDomain"]


@functools.lru_cache(maxsize=1024)
def _encode(text: str) -> str | None:
    try:
        return idna.encode(text, uts46=True, transitional=False).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError, ValueError):
        return None


def toALabel(domain: str) -> str | None:
    """
    C{domain} in A-labels, lower case, without a trailing dot.

    @return: the name, or L{None} when a non-ASCII name is not valid IDNA
        2008.
    """
    text = domain.rstrip(".")
    if text.isascii():
        return text.lower()
    return _encode(text)


def domainKey(domain: str) -> str:
    """
    The form of C{domain} to compare and look up: its A-labels, or (for a
    name without any) the name in lower case.
    """
    return toALabel(domain) or domain.rstrip(".").lower()


def isValidDomain(domain: str) -> bool:
    """
    Whether a non-ASCII C{domain} is valid IDNA 2008 (an ASCII one always
    is, here).
    """
    return toALabel(domain) is not None
