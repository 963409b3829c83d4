# -*- test-case-name: tests.test_checks_authresults -*-
"""
The C{Authentication-Results} header field (RFC 8601), formatted with
authres, and the recognition of fields that claim to be ours.

A message gets one field, C{Authentication-Results: <SMTP_HOSTNAME>; ...}
with an C{spf}, a C{dkim} per signature (or C{dkim=none}), a C{dmarc} and an
C{arc} result.  Fields that arrive carrying our authserv-id are forgeries
(section 5) and are removed before the message is stored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import authres
import authres.arc
import authres.dmarc

from gopherpost.checks.dkimverify import ARCResult, DKIMResult
from gopherpost.checks.dmarc import DMARCResult
from gopherpost.checks.spf import SPFResult

__all__ = ["HEADER", "authservIdOf", "claimsAuthservId", "formatAuthenticationResults"]

#: The header field's name.
HEADER = "Authentication-Results"

_COMMENT = re.compile(r"\((?:[^()\\]|\\.)*\)")


def authservIdOf(value: str) -> str:
    """
    The authserv-id a header field value starts with (lower case, no
    trailing dot): the first token, comments and folding left out; C{""}
    when there is none.
    """
    text = value.replace("\r", " ").replace("\n", " ")
    previous = None
    while previous != text:
        previous, text = text, _COMMENT.sub(" ", text)
    token = text.strip().split(";", 1)[0].strip()
    token = token.split()[0] if token.split() else ""
    if len(token) >= 2 and token[0] == token[-1] == '"':
        token = token[1:-1]
    return token.rstrip(".").lower()


def claimsAuthservId(value: str, authservId: str) -> bool:
    """
    Whether an C{Authentication-Results} value carries C{authservId}.
    """
    return authservIdOf(value) == authservId.rstrip(".").lower()


def _property(ptype: str, name: str, value: str) -> authres.AuthenticationResultProperty:
    return authres.AuthenticationResultProperty(ptype, name, value)


def formatAuthenticationResults(
    authservId: str,
    spf: SPFResult | None,
    dkim: Sequence[DKIMResult],
    dmarc: DMARCResult | None,
    arc: ARCResult | None,
) -> str:
    """
    The value of our C{Authentication-Results} field, folded (CRLF and a
    tab between results).

    @param authservId: C{SMTP_HOSTNAME}.
    @param spf: the SPF result, or L{None} when SPF was not checked.
    @param dkim: one result per signature; empty means C{dkim=none}.
    @param dmarc: the DMARC result, or L{None}.
    @param arc: the ARC result, or L{None}.
    """
    results: list[object] = []
    if spf is not None:
        if spf.identity == "helo":
            results.append(authres.SPFAuthenticationResult(result=spf.result, smtp_helo=spf.domain))
        else:
            results.append(
                authres.SPFAuthenticationResult(result=spf.result, smtp_mailfrom=spf.sender)
            )
    if not dkim:
        results.append(authres.DKIMAuthenticationResult(result="none"))
    for signature in dkim:
        properties = []
        if signature.b:
            properties.append(_property("header", "b", signature.b))
        results.append(
            authres.DKIMAuthenticationResult(
                result=signature.result,
                header_d=signature.domain or None,
                header_s=signature.selector or None,
                properties=properties or None,
            )
        )
    if dmarc is not None:
        properties = []
        if dmarc.domain:
            properties.append(_property("header", "from", dmarc.domain))
        if dmarc.policy:
            properties.append(_property("policy", "dmarc", dmarc.policy))
        results.append(
            authres.AuthenticationResult(
                method="dmarc", result=dmarc.result, properties=properties or None
            )
        )
    if arc is not None:
        results.append(
            authres.arc.ARCAuthenticationResult(result=arc.result, header_as_d=arc.sealer or None)
        )
    parts = [authservId]
    if not results:
        parts.append("none")
    parts.extend(str(r) for r in results)
    return ";\r\n\t".join(parts)
