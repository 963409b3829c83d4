# -*- test-case-name: tests.test_tlspolicy_certificates -*-
"""
The words outbound transport security is described in: the policy that
applied to a connection (the delivery log's C{tls=}) and the failure types
of TLS reports (RFC 8460 section 4.3).
"""

from __future__ import annotations

__all__ = [
    "DANE",
    "MTA_STS",
    "VERIFY",
    "MAY",
    "NONE",
    "POLICY_LABELS",
    "STARTTLS_NOT_SUPPORTED",
    "CERTIFICATE_HOST_MISMATCH",
    "CERTIFICATE_EXPIRED",
    "CERTIFICATE_NOT_TRUSTED",
    "VALIDATION_FAILURE",
    "TLSA_INVALID",
    "DNSSEC_INVALID",
    "DANE_REQUIRED",
    "STS_POLICY_FETCH_ERROR",
    "STS_POLICY_INVALID",
    "STS_WEBPKI_INVALID",
    "RESULT_TYPES",
    "POLICY_TYPE_STS",
    "POLICY_TYPE_TLSA",
    "POLICY_TYPE_NONE",
]

#: Policy label: DANE (RFC 7672) applied: the certificate matched a TLSA record.
DANE = "dane"
#: Policy label: an MTA-STS policy (RFC 8461) in C{enforce} mode applied.
MTA_STS = "mta-sts"
#: Policy label: C{SMTP_OUTBOUND_TLS=verify} or C{require}.
VERIFY = "verify"
#: Policy label: C{SMTP_OUTBOUND_TLS=may}.
MAY = "may"
#: Policy label: C{SMTP_OUTBOUND_TLS=none}.
NONE = "none"
#: Every policy label.
POLICY_LABELS = (DANE, MTA_STS, VERIFY, MAY, NONE)

# RFC 8460 4.3.1: negotiation failures.
STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
CERTIFICATE_EXPIRED = "certificate-expired"
CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
VALIDATION_FAILURE = "validation-failure"
# RFC 8460 4.3.2.1: DANE policy failures.
TLSA_INVALID = "tlsa-invalid"
DNSSEC_INVALID = "dnssec-invalid"
DANE_REQUIRED = "dane-required"
# RFC 8460 4.3.2.2: MTA-STS policy failures.
STS_POLICY_FETCH_ERROR = "sts-policy-fetch-error"
STS_POLICY_INVALID = "sts-policy-invalid"
STS_WEBPKI_INVALID = "sts-webpki-invalid"

#: Every result type a TLS report may carry.
RESULT_TYPES = (
    STARTTLS_NOT_SUPPORTED,
    CERTIFICATE_HOST_MISMATCH,
    CERTIFICATE_EXPIRED,
    CERTIFICATE_NOT_TRUSTED,
    VALIDATION_FAILURE,
    TLSA_INVALID,
    DNSSEC_INVALID,
    DANE_REQUIRED,
    STS_POLICY_FETCH_ERROR,
    STS_POLICY_INVALID,
    STS_WEBPKI_INVALID,
)

#: RFC 8460 4.4 C{policy-type}: an MTA-STS policy applied.
POLICY_TYPE_STS = "sts"
#: RFC 8460 4.4 C{policy-type}: DANE TLSA records applied.
POLICY_TYPE_TLSA = "tlsa"
#: RFC 8460 4.4 C{policy-type}: neither.
POLICY_TYPE_NONE = "no-policy-found"
