# -*- test-case-name: tests.test_acme_renewal -*-
"""
When to renew, as pure functions of the certificate, the time and the CA's
advice.

  - Without advice: when a third of the certificate's lifetime remains
    (day 60 of a 90-day certificate), as certbot does.
  - With ACME Renewal Information (RFC 9773, "ARI"), when the CA offers it:
    at a random moment inside the window the CA suggests, asked again after
    the CA's C{Retry-After}.
  - After a failed order: again after L{retryDelay}, doubling from five
    minutes to six hours (Let's Encrypt allows five failed validations per
    name and hour).
"""

from __future__ import annotations

import base64
import datetime
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509

__all__ = [
    "EXPIRY_WARNING",
    "RETRY_INITIAL",
    "RETRY_MAX",
    "RenewalWindow",
    "ariCertificateID",
    "parseRenewalInfo",
    "renewalTime",
    "retryDelay",
    "thirdOfLifetimeLeft",
]

#: The first retry after a failed order, in seconds.
RETRY_INITIAL = 300.0
#: The longest wait between retries, in seconds.
RETRY_MAX = 6 * 3600.0
#: Fewer seconds than this left on a certificate whose renewal fails: warn
#: at every failed attempt.
EXPIRY_WARNING = 14 * 86400.0
#: How long to wait before asking the CA for renewal information again when
#: it does not say (RFC 9773 suggests six hours), and the bounds put on what
#: it says.
ARI_DEFAULT_RETRY = 6 * 3600.0
_ARI_MIN_RETRY = 60.0
_ARI_MAX_RETRY = 86400.0


@dataclass(frozen=True)
class RenewalWindow:
    """
    The CA's advice (RFC 9773): renew between C{start} and C{end} (seconds
    since the epoch), and ask again after C{retryAfter} seconds.
    """

    start: float
    end: float
    retryAfter: float = ARI_DEFAULT_RETRY
    explanationURL: str | None = None


def thirdOfLifetimeLeft(notBefore: float, notAfter: float) -> float:
    """
    The moment a third of the lifetime remains (seconds since the epoch).
    """
    return notAfter - (notAfter - notBefore) / 3.0


def renewalTime(
    notBefore: float,
    notAfter: float,
    window: RenewalWindow | None = None,
    random: Callable[[], float] | None = None,
) -> float:
    """
    When to renew a certificate valid from C{notBefore} to C{notAfter}.

    @param window: the CA's advice, if it gave any: a moment chosen
        uniformly inside it is returned.
    @param random: returns a float in [0, 1) (default L{random.random}).
    """
    if window is None:
        return thirdOfLifetimeLeft(notBefore, notAfter)
    if random is None:
        import random as _random

        random = _random.random
    return window.start + (window.end - window.start) * random()


def retryDelay(failures: int) -> float:
    """
    Seconds to wait after the C{failures}-th failed order in a row.
    """
    if failures < 1:
        return 0.0
    return min(RETRY_INITIAL * 2.0 ** min(failures - 1, 32), RETRY_MAX)


def _base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _integerContent(number: int) -> bytes:
    """
    The content octets of a DER INTEGER (two's complement, minimal).
    """
    length = max(1, (number.bit_length() + 8) // 8)
    return number.to_bytes(length, "big", signed=True)


def ariCertificateID(certificate: x509.Certificate) -> str:
    """
    The certificate's identifier in a renewal-information URL (RFC 9773,
    section 4.1): base64url(authority key identifier) "." base64url(serial).

    @raise ValueError: the certificate has no authority key identifier.
    """
    try:
        aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    except x509.ExtensionNotFound:
        raise ValueError("the certificate has no authority key identifier") from None
    keyIdentifier = aki.value.key_identifier
    if keyIdentifier is None:
        raise ValueError("the certificate's authority key identifier has no key identifier")
    return f"{_base64url(keyIdentifier)}.{_base64url(_integerContent(certificate.serial_number))}"


_FRACTION = re.compile(r"(\.\d{6})\d+")


def _rfc3339(text: Any) -> float:
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a date")
    cleaned = _FRACTION.sub(r"\1", text.strip())
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    moment = datetime.datetime.fromisoformat(cleaned)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return moment.timestamp()


def parseRenewalInfo(document: Any, retryAfter: float | None = None) -> RenewalWindow:
    """
    Read a renewal-information answer (C{{"suggestedWindow": {"start": ...,
    "end": ...}, "explanationURL": ...}}).

    @param retryAfter: the answer's C{Retry-After} in seconds, if any; it is
        kept between a minute and a day.
    @raise ValueError: the document does not hold a valid window.
    """
    if not isinstance(document, Mapping):
        raise ValueError("renewal information is not a JSON object")
    window = document.get("suggestedWindow")
    if not isinstance(window, Mapping):
        raise ValueError("renewal information has no suggestedWindow")
    start, end = _rfc3339(window.get("start")), _rfc3339(window.get("end"))
    if end < start:
        raise ValueError("the suggested window ends before it starts")
    explanation = document.get("explanationURL")
    retry = ARI_DEFAULT_RETRY if retryAfter is None else retryAfter
    return RenewalWindow(
        start,
        end,
        min(max(retry, _ARI_MIN_RETRY), _ARI_MAX_RETRY),
        explanation if isinstance(explanation, str) else None,
    )
