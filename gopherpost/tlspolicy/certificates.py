# -*- test-case-name: tests.test_tlspolicy_certificates -*-
"""
Certificate checks for outbound TLS, as pure functions of the chain a
server sent: TLSA records (RFC 6698) and DANE's rules for SMTP (RFC 7672
section 3), host name matching, and OpenSSL's verification errors as the
failure types of TLS reports (RFC 8460 section 4.3).

DANE for SMTP uses two certificate usages:
  - DANE-EE (3): the server's own certificate (selector 0) or public key
    (selector 1) matches the record; no name, expiry or chain check
    (RFC 7672 3.1.1).
  - DANE-TA (2): a certificate the server sent (its chain) matches the
    record, and the server's certificate chains to it, is within its
    validity, and names the MX host or the destination domain (RFC 7672
    3.1.2 and 3.2.2).  The trust anchor must be in the chain the server
    sends, as RFC 7672 3.1.2 requires of servers.
Matching types 0 (the data itself), 1 (SHA-256) and 2 (SHA-512).  Records
with any other usage, selector or matching type are unusable, as is a
digest of the wrong length.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import crypto

from gopherpost.tlspolicy.results import (
    CERTIFICATE_EXPIRED,
    CERTIFICATE_HOST_MISMATCH,
    CERTIFICATE_NOT_TRUSTED,
    TLSA_INVALID,
    VALIDATION_FAILURE,
)

__all__ = [
    "DANE_TA",
    "DANE_EE",
    "TLSARecord",
    "CertificateVerdict",
    "certificateNames",
    "matchesHostname",
    "verifyDANE",
    "verifyErrorType",
    "verifyErrorText",
]

#: Certificate usage: a trust anchor (RFC 7218 acronym DANE-TA).
DANE_TA = 2
#: Certificate usage: the end entity itself (DANE-EE).
DANE_EE = 3

_DIGEST_SIZES = {1: 32, 2: 64}

# OpenSSL's X509_V_ERR_* codes, as RFC 8460 names them.
_EXPIRED = {9: "certificate is not yet valid", 10: "certificate has expired"}
_UNTRUSTED = {
    2: "unable to get issuer certificate",
    18: "self-signed certificate",
    19: "self-signed certificate in the chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
    24: "invalid CA certificate",
    27: "certificate not trusted",
    28: "certificate rejected",
}


class TLSARecord(NamedTuple):
    """
    One TLSA record.

    @ivar usage: the certificate usage (L{DANE_TA}, L{DANE_EE}, ...).
    @ivar selector: 0 the whole certificate, 1 its SubjectPublicKeyInfo.
    @ivar matchingType: 0 exact, 1 SHA-256, 2 SHA-512.
    @ivar data: the certificate association data.
    """

    usage: int
    selector: int
    matchingType: int
    data: bytes

    @classmethod
    def fromRdata(cls, rdata: Any) -> TLSARecord:
        """
        From a dnspython TLSA rdata.
        """
        return cls(int(rdata.usage), int(rdata.selector), int(rdata.mtype), bytes(rdata.cert))

    @property
    def usable(self) -> bool:
        """
        Whether DANE for SMTP can use this record (RFC 7672 3.1).
        """
        if self.usage not in (DANE_TA, DANE_EE) or self.selector not in (0, 1):
            return False
        if self.matchingType == 0:
            return bool(self.data)
        return _DIGEST_SIZES.get(self.matchingType) == len(self.data)

    def presentation(self) -> str:
        """
        The record as a zone file writes it, e.g. C{"3 1 1 8a9c..."}.
        """
        return f"{self.usage} {self.selector} {self.matchingType} {self.data.hex()}"

    def matches(self, certificate: x509.Certificate) -> bool:
        """
        Whether C{certificate} is the one this record describes (whatever
        the usage).
        """
        try:
            if self.selector == 0:
                data = certificate.public_bytes(serialization.Encoding.DER)
            elif self.selector == 1:
                data = certificate.public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            else:
                return False
        except Exception:
            # A key type cryptography cannot load: it matches nothing.
            return False
        if self.matchingType == 1:
            data = hashlib.sha256(data).digest()
        elif self.matchingType == 2:
            data = hashlib.sha512(data).digest()
        elif self.matchingType != 0:
            return False
        return data == self.data


class CertificateVerdict(NamedTuple):
    """
    The outcome of one certificate check.

    @ivar ok: whether the certificate passed.
    @ivar failureType: the RFC 8460 result type when it did not.
    @ivar reason: one line for logs and bounces.
    @ivar record: the TLSA record that matched (DANE), if any.
    """

    ok: bool
    failureType: str | None = None
    reason: str = ""
    record: TLSARecord | None = None


def certificateNames(certificate: x509.Certificate) -> list[str]:
    """
    The DNS names a certificate is for: its subjectAltName dNSNames, or
    when it has none its subject's common names (RFC 7672 3.2.3).
    """
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = list(extension.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = []
    if names:
        return names
    return [
        str(attribute.value)
        for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ]


def _normalized(name: str) -> str:
    name = name.strip().rstrip(".").lower()
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return ""
    return name


def matchesHostname(certificate: x509.Certificate, names: Sequence[str]) -> bool:
    """
    Whether the certificate is for one of C{names}: equal ignoring case,
    or a wildcard C{*} as the whole leftmost label matching exactly one
    label (RFC 6125 6.4.3, as RFC 7672 3.2.3 allows).
    """
    wanted = [n for n in (_normalized(name) for name in names) if n]
    for presented in certificateNames(certificate):
        pattern = _normalized(presented)
        if not pattern:
            continue
        for name in wanted:
            if pattern.startswith("*."):
                first, dot, rest = name.partition(".")
                if first and dot and rest == pattern[2:] and "." in rest:
                    return True
            elif pattern == name:
                return True
    return False


def _forServers(certificate: x509.Certificate) -> bool:
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return ExtendedKeyUsageOID.SERVER_AUTH in usages or (
        ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages
    )


def verifyErrorType(code: int) -> str:
    """
    The RFC 8460 result type of an OpenSSL verification error code.
    """
    if code in _EXPIRED:
        return CERTIFICATE_EXPIRED
    if code in _UNTRUSTED:
        return CERTIFICATE_NOT_TRUSTED
    return VALIDATION_FAILURE


def verifyErrorText(code: int) -> str:
    """
    What an OpenSSL verification error code means, one line.
    """
    return _EXPIRED.get(code) or _UNTRUSTED.get(code) or f"certificate verification error {code}"


def _chainsTo(
    leaf: x509.Certificate, anchor: x509.Certificate, chain: Sequence[x509.Certificate]
) -> CertificateVerdict:
    """
    Whether C{leaf} chains to C{anchor} (trusted as it is, even when it is
    not self-signed) through certificates of C{chain}, all valid now.
    """
    store = crypto.X509Store()
    store.add_cert(crypto.X509.from_cryptography(anchor))
    store.set_flags(crypto.X509StoreFlags.PARTIAL_CHAIN)
    untrusted = [crypto.X509.from_cryptography(c) for c in chain]
    context = crypto.X509StoreContext(store, crypto.X509.from_cryptography(leaf), untrusted)
    try:
        context.verify_certificate()
    except crypto.X509StoreContextError as e:
        errors = getattr(e, "errors", None) or [0, 0, str(e)]
        code = int(errors[0])
        return CertificateVerdict(
            False, verifyErrorType(code), f"DANE-TA: {verifyErrorText(code)} (depth {errors[1]})"
        )
    return CertificateVerdict(True)


def verifyDANE(
    records: Sequence[TLSARecord], chain: Sequence[x509.Certificate], names: Sequence[str]
) -> CertificateVerdict:
    """
    Check a server's chain against its usable TLSA records (see the module
    docstring).

    @param records: the TLSA records; unusable ones are skipped.
    @param chain: the certificates the server sent, its own first.
    @param names: the names a DANE-TA certificate may be for: the MX host
        name, then the destination domain (RFC 7672 3.2.2).
    @return: the verdict; a failure says what failed last, C{tlsa-invalid}
        when no record matched at all.
    """
    usable = [r for r in records if r.usable]
    if not chain:
        return CertificateVerdict(False, VALIDATION_FAILURE, "the server sent no certificate")
    leaf = chain[0]
    for record in usable:
        if record.usage == DANE_EE and record.matches(leaf):
            return CertificateVerdict(True, record=record)
    problem: CertificateVerdict | None = None
    for record in usable:
        if record.usage != DANE_TA:
            continue
        for anchor in chain[1:]:
            if not record.matches(anchor):
                continue
            verdict = _chainsTo(leaf, anchor, chain[1:])
            if verdict.ok and not _forServers(leaf):
                verdict = CertificateVerdict(
                    False, VALIDATION_FAILURE, "DANE-TA: the certificate is not for TLS servers"
                )
            if verdict.ok and not matchesHostname(leaf, names):
                verdict = CertificateVerdict(
                    False,
                    CERTIFICATE_HOST_MISMATCH,
                    f"DANE-TA: the certificate is not for {' or '.join(names)}",
                )
            if verdict.ok:
                return verdict._replace(record=record)
            problem = verdict
    if problem is not None:
        return problem
    return CertificateVerdict(
        False, TLSA_INVALID, f"no TLSA record of {len(usable)} matches the certificate chain"
    )
