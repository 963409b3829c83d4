# -*- test-case-name: tests.test_tls -*-
"""
Certificates made at test time: a throw-away certificate authority and the
leaf certificates tests need (good, self-signed, expired, wrong name, with an
intermediate), written as PEM files into a temporary directory.

Keys are EC P-256 unless RSA is asked for, so a whole set takes milliseconds.
Works with cryptography 38 (Debian bookworm) and current releases.

Not built on trustme: bookworm's python3-trustme (0.9) makes only RSA-2048
keys, about 0.5 s each on the test machines (2 to 4 s per set, for every
test that makes one), and neither self-signed certificates nor a chosen
start of validity, so this module would keep most of its code anyway.

Typical use in a trial test::

    pki = makeTestPKI(self.mktemp(), "mx.example.test")
    server = SMTPTestServer(certificate=pki.good)
    trustRoot = pki.ca.trustRoot()
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet.ssl import Certificate, trustRootFromCertificates

__all__ = [
    "CertificateFiles",
    "CertificateAuthority",
    "TestPKI",
    "generateKey",
    "selfSignedCertificate",
    "makeTestPKI",
]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_ONE_DAY = datetime.timedelta(days=1)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def generateKey(keyType: str = "ec") -> PrivateKey:
    """
    Make a private key.

    @param keyType: C{"ec"} (P-256, fast) or C{"rsa"} (2048 bits).
    """
    if keyType == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if keyType == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unknown key type {keyType!r}")


def _keyPEM(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certPEM(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(commonName: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "GopherPost tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, commonName),
        ]
    )


def _subjectAlternativeNames(names: Sequence[str]) -> x509.SubjectAlternativeName:
    general: list = []
    for name in names:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            general.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(general)


def _write(path: str, data: bytes, mode: int = 0o644) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


@dataclass(frozen=True)
class CertificateFiles:
    """
    One certificate and its key on disk.

    @ivar certPath: PEM file: the leaf certificate, followed by any
        intermediate certificates (a chain file).
    @ivar keyPath: PEM file with the unencrypted PKCS#8 private key.
    @ivar names: the DNS names / IP addresses the certificate is for.
    @ivar certificate: the leaf as a C{cryptography} object.
    """

    certPath: str
    keyPath: str
    names: tuple
    certificate: x509.Certificate

    def certificatePEM(self) -> bytes:
        """
        The contents of L{certPath}.
        """
        with open(self.certPath, "rb") as f:
            return f.read()

    def keyPEM(self) -> bytes:
        """
        The contents of L{keyPath}.
        """
        with open(self.keyPath, "rb") as f:
            return f.read()


class CertificateAuthority:
    """
    A certificate authority whose certificate and key live in C{directory}.

    @ivar certPath: the CA certificate as PEM (use as C{SSL_CERT_FILE}).
    @ivar certificate: the CA certificate.
    @ivar chain: PEM of the intermediate certificates between this CA and
        its root (empty for a root).
    """

    certificate: x509.Certificate
    chain: bytes

    def __init__(
        self,
        directory: str,
        commonName: str = "GopherPost Test Root CA",
        keyType: str = "ec",
        issuer: CertificateAuthority | None = None,
    ) -> None:
        """
        @param directory: where the files are written (created if missing).
        @param commonName: the CA's name; also the base of its file names.
        @param keyType: C{"ec"} or C{"rsa"}.
        @param issuer: sign this CA with another one (an intermediate);
            L{None} for a self-signed root.
        """
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self._key = generateKey(keyType)
        now = _now()
        subject = _name(commonName)
        issuerName = subject if issuer is None else issuer.certificate.subject
        signingKey = self._key if issuer is None else issuer._key
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuerName)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _ONE_DAY)
            .not_valid_after(now + 3650 * _ONE_DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signingKey.public_key()),
                critical=False,
            )
        )
        self.certificate = builder.sign(signingKey, hashes.SHA256())
        self.chain = b"" if issuer is None else _certPEM(self.certificate) + issuer.chain
        base = commonName.replace(" ", "-").lower()
        self.certPath = _write(os.path.join(directory, base + ".pem"), _certPEM(self.certificate))
        self._serial = 0

    def intermediate(
        self, commonName: str = "GopherPost Test Intermediate CA"
    ) -> CertificateAuthority:
        """
        Make a CA signed by this one.  Leaves it issues carry it in their
        chain file.
        """
        return CertificateAuthority(self.directory, commonName, issuer=self)

    def issue(
        self,
        names: Sequence[str],
        basename: str | None = None,
        keyType: str = "ec",
        notBefore: datetime.datetime | None = None,
        notAfter: datetime.datetime | None = None,
    ) -> CertificateFiles:
        """
        Issue a server certificate.

        @param names: DNS names (and/or IP addresses) for the subjectAltName;
            the first is also the common name.
        @param basename: file name stem (default: the first name).
        @param keyType: C{"ec"} or C{"rsa"}.
        @param notBefore: start of validity (default: yesterday).
        @param notAfter: end of validity (default: in a year).
        @return: the files; the certificate file holds the leaf followed by
            this CA's chain of intermediates.
        """
        key = generateKey(keyType)
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(notBefore or now - _ONE_DAY)
            .not_valid_after(notAfter or now + 365 * _ONE_DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_subjectAlternativeNames(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        self._serial += 1
        stem = os.path.join(self.directory, (basename or names[0]) + f"-{self._serial}")
        certPath = _write(stem + ".crt", _certPEM(cert) + self.chain)
        keyPath = _write(stem + ".key", _keyPEM(key), 0o600)
        return CertificateFiles(certPath, keyPath, tuple(names), cert)

    def trustRoot(self) -> object:
        """
        This CA as a Twisted trust root, for C{optionsForClientTLS}.
        """
        return trustRootFromCertificates([Certificate.loadPEM(_certPEM(self.certificate))])


def selfSignedCertificate(
    directory: str, names: Sequence[str], keyType: str = "ec", basename: str = "self-signed"
) -> CertificateFiles:
    """
    A certificate for C{names} signed by its own key (no CA will trust it).
    """
    os.makedirs(directory, exist_ok=True)
    key = generateKey(keyType)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(_name(names[0]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _ONE_DAY)
        .not_valid_after(now + 365 * _ONE_DAY)
        .add_extension(_subjectAlternativeNames(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    stem = os.path.join(directory, basename)
    return CertificateFiles(
        _write(stem + ".crt", _certPEM(cert)),
        _write(stem + ".key", _keyPEM(key), 0o600),
        tuple(names),
        cert,
    )


@dataclass(frozen=True)
class TestPKI:
    """
    A CA and the usual suspects for one host name.

    @ivar ca: the root CA (trust C{ca.certPath}).
    @ivar good: valid for C{hostname}, issued by the root.
    @ivar chained: valid for C{hostname}, issued by an intermediate; its
        certificate file holds leaf + intermediate.
    @ivar selfSigned: for C{hostname}, self-signed.
    @ivar expired: for C{hostname}, issued by the root, expired yesterday.
    @ivar wrongName: issued by the root for C{"wrong.example.test"}.
    """

    hostname: str
    ca: CertificateAuthority
    good: CertificateFiles
    chained: CertificateFiles
    selfSigned: CertificateFiles
    expired: CertificateFiles
    wrongName: CertificateFiles


def makeTestPKI(directory: str, hostname: str = "mx.example.test") -> TestPKI:
    """
    Make a L{TestPKI} for C{hostname} in C{directory}.
    """
    ca = CertificateAuthority(directory)
    now = _now()
    return TestPKI(
        hostname=hostname,
        ca=ca,
        good=ca.issue([hostname], basename="good"),
        chained=ca.intermediate().issue([hostname], basename="chained"),
        selfSigned=selfSignedCertificate(directory, [hostname]),
        expired=ca.issue(
            [hostname],
            basename="expired",
            notBefore=now - 30 * _ONE_DAY,
            notAfter=now - _ONE_DAY,
        ),
        wrongName=ca.issue(["wrong.example.test"], basename="wrong-name"),
    )
