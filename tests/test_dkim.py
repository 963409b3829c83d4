"""
Tests for L{gopherpost.dkim}: signatures are checked with dkimpy's own
verifier, against the public key served by a test C{dnsfunc} or by the
loopback DNS server.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Generator
from typing import Any, cast

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from twisted.internet import defer, reactor, threads
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import blockingCallFromThread
from twisted.trial import unittest

from gopherpost.config import ConfigError, Settings, settingsFromEnvironment
from gopherpost.dkim import (
    DKIMSigner,
    DKIMSignError,
    loadSigner,
    parsePrivateKey,
)
from gopherpost.dns import Resolver
from tests.support.dnsserver import startDNSServer

MESSAGE = (
    b"Received: from client.example.test by mx.example.test\r\n"
    b"From: Alice <alice@sender.test>\r\n"
    b"To: bob@example.test\r\n"
    b"Subject: Hello\r\n"
    b"Date: Sun, 22 Nov 2026 18:00:00 +0000\r\n"
    b"Message-ID: <1@sender.test>\r\n"
    b"X-Other: not signed\r\n"
    b"\r\n"
    b"Hello Bob.\r\n"
    b"..leading dot stays as stored\r\n"
)

# A throwaway 512-bit key: too small for DKIM.
SMALL_RSA = b"""-----BEGIN RSA PRIVATE KEY-----
MIIBOQIBAAJBALXK3peHx0ZqMsur0Y0t7sy08+JyMZxdF6Rs3x9mQpYySvjoeMIc
k7U3Ikr61U9xuczkTP2jP2rMg/K21BTjrn8CAwEAAQJAVM5gCtaXmvy914+/ARp1
dV/RCkl1ZVl0RwtXB0HgPEpOsg/+V1llHmCasii+nAmzueGJUXD+1yHhVC8AcdWE
wQIhANgxqq5UKGxOGcm5MmT9ixjqHP6CqhcnSECrcIc2ynohAiEA10OuW/+LVO5O
NmhwlkL6FPP70qeZ0uEMPA9c1hEvVJ8CIBJzQqa4Be8gRzEg/f0CalGJAUpzKkLp
lk/2kZbohSUhAiA6rTAx045fMDYRjpZh3w/b9kWGPjknykBTfryHfVexcQIgd5m6
bQP1C6oIwvTORK9LnsOWUX7f/FnFnyT/i8y1jkE=
-----END RSA PRIVATE KEY-----
"""

_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_ED_KEY = ed25519.Ed25519PrivateKey.generate()


def _loaded(settings: Settings) -> DKIMSigner:
    """
    L{loadSigner}'s signer, which the settings must make.
    """
    signer = loadSigner(settings)
    assert signer is not None
    return signer


#: What an inlineCallbacks generator yields, is sent and returns.
InlineCallbacks = Generator[defer.Deferred[Any], Any, None]


def _pem(key, fmt=serialization.PrivateFormat.PKCS8, encryption=None) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, fmt, encryption or serialization.NoEncryption()
    )


def _settings(**env: str) -> Settings:
    environ = {"SMTP_HOSTNAME": "mx.example.test"}
    environ.update(env)
    return settingsFromEnvironment(environ, checkFiles=False)


def _tags(signed: bytes) -> dict[bytes, bytes]:
    headers, _ = dkim.rfc822_parse(signed)
    name, value = headers[0]
    assert name.lower() == b"dkim-signature", name
    return dkim.util.parse_tag_value(b"".join(value.split()))


def _verify(signer: DKIMSigner, message: bytes, domain: bytes) -> bool:
    record = signer.publicKeyRecord().encode("ascii")
    expected = signer.selector.encode() + b"._domainkey." + domain + b"."

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == expected else None

    return dkim.verify(message, dnsfunc=dnsfunc)


class LoadSignerTests(unittest.TestCase):
    """
    L{loadSigner}: keys from the environment, errors naming the variable.
    """

    def test_disabled(self) -> None:
        """
        Without any C{SMTP_DKIM_*}, there is no signer.
        """
        self.assertIsNone(loadSigner(_settings()))

    def test_inlinePKCS1WithEscapes(self) -> None:
        """
        An inline PKCS#1 RSA key with literal C{\\n} escapes loads.
        """
        pem = _pem(_RSA_KEY, serialization.PrivateFormat.TraditionalOpenSSL).decode()
        self.assertIn("BEGIN RSA PRIVATE KEY", pem)
        signer = _loaded(
            _settings(SMTP_DKIM_SELECTOR="sel", SMTP_DKIM_PRIVATE_KEY=pem.replace("\n", "\\n"))
        )
        self.assertEqual(signer.algorithm, "rsa-sha256")
        self.assertTrue(_verify(signer, signer.sign(MESSAGE, "sender.test"), b"sender.test"))

    def test_pkcs8File(self) -> None:
        """
        A PKCS#8 RSA key file loads.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(_pem(_RSA_KEY))
        signer = _loaded(_settings(SMTP_DKIM_SELECTOR="sel", SMTP_DKIM_KEY_PATH=path))
        self.assertEqual(signer.algorithm, "rsa-sha256")
        self.assertTrue(_verify(signer, signer.sign(MESSAGE, "sender.test"), b"sender.test"))

    def test_ed25519(self) -> None:
        """
        An Ed25519 PKCS#8 key signs ed25519-sha256.
        """
        signer = _loaded(
            _settings(SMTP_DKIM_SELECTOR="ed", SMTP_DKIM_PRIVATE_KEY=_pem(_ED_KEY).decode())
        )
        self.assertEqual(signer.algorithm, "ed25519-sha256")
        self.assertIn("k=ed25519", signer.publicKeyRecord())
        signed = signer.sign(MESSAGE, "sender.test")
        self.assertEqual(_tags(signed)[b"a"], b"ed25519-sha256")
        self.assertTrue(_verify(signer, signed, b"sender.test"))

    def test_ed25519RawSeed(self) -> None:
        """
        The base64 seed that dkimpy's C{dknewkey} writes is accepted too.
        """
        seed = _ED_KEY.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(base64.b64encode(seed) + b"\n")
        signer = _loaded(_settings(SMTP_DKIM_SELECTOR="ed", SMTP_DKIM_KEY_PATH=path))
        self.assertEqual(signer.algorithm, "ed25519-sha256")
        self.assertTrue(_verify(signer, signer.sign(MESSAGE, "sender.test"), b"sender.test"))

    def test_inlineWins(self) -> None:
        """
        C{SMTP_DKIM_PRIVATE_KEY} wins over C{SMTP_DKIM_KEY_PATH}, which is
        then not read at all.
        """
        signer = _loaded(
            _settings(
                SMTP_DKIM_SELECTOR="ed",
                SMTP_DKIM_PRIVATE_KEY=_pem(_ED_KEY).decode(),
                SMTP_DKIM_KEY_PATH="/nonexistent/dkim.key",
            )
        )
        self.assertEqual(signer.algorithm, "ed25519-sha256")

    def _error(self, **env: str) -> ConfigError:
        return self.assertRaises(ConfigError, loadSigner, _settings(**env))

    def test_missingFile(self) -> None:
        """
        A key file that does not exist names C{SMTP_DKIM_KEY_PATH}.
        """
        error = self._error(SMTP_DKIM_SELECTOR="s", SMTP_DKIM_KEY_PATH="/nonexistent/k.pem")
        self.assertEqual(error.variable, "SMTP_DKIM_KEY_PATH")
        self.assertIn("/nonexistent/k.pem", str(error))

    def test_unreadableFile(self) -> None:
        """
        A key path that cannot be read (here: a directory) names
        C{SMTP_DKIM_KEY_PATH}.
        """
        path = self.mktemp()
        import os

        os.mkdir(path)
        error = self._error(SMTP_DKIM_SELECTOR="s", SMTP_DKIM_KEY_PATH=path)
        self.assertEqual(error.variable, "SMTP_DKIM_KEY_PATH")

    def test_badFileContents(self) -> None:
        """
        A key file with garbage names C{SMTP_DKIM_KEY_PATH}.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"-----BEGIN PRIVATE KEY-----\nnonsense\n-----END PRIVATE KEY-----\n")
        error = self._error(SMTP_DKIM_SELECTOR="s", SMTP_DKIM_KEY_PATH=path)
        self.assertEqual(error.variable, "SMTP_DKIM_KEY_PATH")
        self.assertNotIn("\n", str(error))

    def test_badInline(self) -> None:
        """
        An inline value that is no key names C{SMTP_DKIM_PRIVATE_KEY}.
        """
        garbage = "-----BEGIN RSA PRIVATE KEY-----\\nAAAA\\n-----END RSA PRIVATE KEY-----"
        for value in ("not a key", garbage):
            error = self._error(SMTP_DKIM_SELECTOR="s", SMTP_DKIM_PRIVATE_KEY=value)
            self.assertEqual(error.variable, "SMTP_DKIM_PRIVATE_KEY")

    def test_encrypted(self) -> None:
        """
        An encrypted key is refused.
        """
        pem = _pem(_RSA_KEY, encryption=serialization.BestAvailableEncryption(b"pw"))
        error = self._error(SMTP_DKIM_SELECTOR="s", SMTP_DKIM_PRIVATE_KEY=pem.decode())
        self.assertEqual(error.variable, "SMTP_DKIM_PRIVATE_KEY")
        self.assertIn("encrypted", str(error))

    def test_wrongKeyType(self) -> None:
        """
        An EC key is refused.
        """
        pem = _pem(ec.generate_private_key(ec.SECP256R1()))
        error = self._error(SMTP_DKIM_SELECTOR="s", SMTP_DKIM_PRIVATE_KEY=pem.decode())
        self.assertIn("RSA or Ed25519", str(error))

    def test_smallRSA(self) -> None:
        """
        An RSA key under 1024 bits is refused.
        """
        error = self.assertRaises(ConfigError, parsePrivateKey, SMALL_RSA, "SMTP_DKIM_KEY_PATH")
        self.assertIn("512 bits", str(error))

    def test_noSelector(self) -> None:
        """
        Without a selector there is no signer (the settings already refuse
        this; L{loadSigner} checks again for hand-made settings).
        """
        settings = Settings(dkimPrivateKey=_pem(_ED_KEY).decode())
        error = self.assertRaises(ConfigError, loadSigner, settings)
        self.assertEqual(error.variable, "SMTP_DKIM_SELECTOR")


class SignTests(unittest.TestCase):
    """
    L{DKIMSigner.sign}.
    """

    def setUp(self) -> None:
        self.signer = DKIMSigner("sel", _RSA_KEY)

    def test_prependedHeader(self) -> None:
        """
        The signature is a header field before the unchanged message, with
        CRLF line ends only.
        """
        signed = self.signer.sign(MESSAGE, "sender.test")
        self.assertTrue(signed.startswith(b"DKIM-Signature: "))
        self.assertTrue(signed.endswith(MESSAGE))
        header = signed[: len(signed) - len(MESSAGE)]
        self.assertNotIn(b"\n", header.replace(b"\r\n", b""))
        self.assertTrue(header.endswith(b"\r\n"))

    def test_tags(self) -> None:
        """
        a=rsa-sha256, c=relaxed/relaxed, the sender's domain, and h= with
        the reference's headers that are present, in its order.
        """
        tags = _tags(self.signer.sign(MESSAGE, "Sender.Test."))
        self.assertEqual(tags[b"a"], b"rsa-sha256")
        self.assertEqual(tags[b"c"], b"relaxed/relaxed")
        self.assertEqual(tags[b"d"], b"sender.test")
        self.assertEqual(tags[b"s"], b"sel")
        self.assertEqual(tags[b"h"], b"from:to:subject:date:message-id")

    def test_allHeaders(self) -> None:
        """
        MIME headers are signed when present.
        """
        message = MESSAGE.replace(
            b"X-Other:", b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\nX-Other:"
        )
        tags = _tags(self.signer.sign(message, "sender.test"))
        self.assertEqual(tags[b"h"], b"from:to:subject:date:mime-version:content-type:message-id")

    def test_configuredDomain(self) -> None:
        """
        C{SMTP_DKIM_DOMAIN} wins over the sender's domain.
        """
        signer = DKIMSigner("sel", _RSA_KEY, domain="Signing.Test")
        signed = signer.sign(MESSAGE, "sender.test")
        self.assertEqual(_tags(signed)[b"d"], b"signing.test")
        self.assertTrue(_verify(signer, signed, b"signing.test"))

    def test_fromDomainFallback(self) -> None:
        """
        Without a sender domain (a bounce), the From domain is used.
        """
        self.assertEqual(_tags(self.signer.sign(MESSAGE, None))[b"d"], b"sender.test")
        self.assertEqual(_tags(self.signer.sign(MESSAGE, ""))[b"d"], b"sender.test")

    def test_verifiesAndDetectsTampering(self) -> None:
        """
        The signature verifies, survives relaxed header changes, and fails
        once the body or a signed header changes.
        """
        signed = self.signer.sign(MESSAGE, "sender.test")
        self.assertTrue(_verify(self.signer, signed, b"sender.test"))
        rewhitespaced = signed.replace(b"Subject: Hello", b"subject:   Hello ")
        self.assertTrue(_verify(self.signer, rewhitespaced, b"sender.test"))
        unsignedHeader = signed.replace(b"X-Other: not signed", b"X-Other: changed")
        self.assertTrue(_verify(self.signer, unsignedHeader, b"sender.test"))
        self.assertFalse(
            _verify(self.signer, signed.replace(b"Hello Bob", b"Hello Eve"), b"sender.test")
        )
        self.assertFalse(
            _verify(self.signer, signed.replace(b"Subject: Hello", b"Subject: Bye"), b"sender.test")
        )

    def test_notSignedTwice(self) -> None:
        """
        A message that already has our d= and s= is returned unchanged; a
        signature by another selector or domain does not count.
        """
        signed = self.signer.sign(MESSAGE, "sender.test")
        self.assertIs(self.signer.sign(signed, "Sender.Test"), signed)
        other = DKIMSigner("other", _RSA_KEY)
        twice = other.sign(signed, "sender.test")
        self.assertEqual(twice.count(b"DKIM-Signature:"), 2)
        otherDomain = self.signer.sign(signed, "elsewhere.test")
        self.assertEqual(otherDomain.count(b"DKIM-Signature:"), 2)

    def test_noFrom(self) -> None:
        """
        A message without From cannot be signed.
        """
        message = re.sub(rb"From: [^\r]*\r\n", b"", MESSAGE)
        self.assertRaises(DKIMSignError, self.signer.sign, message, "sender.test")

    def test_noDomain(self) -> None:
        """
        No configured domain, no sender domain and no From domain: error.
        """
        message = MESSAGE.replace(b"Alice <alice@sender.test>", b"undisclosed")
        self.assertRaises(DKIMSignError, self.signer.sign, message, None)

    def test_wrongKeyType(self) -> None:
        """
        Only RSA and Ed25519 keys make signers.
        """
        self.assertRaises(TypeError, DKIMSigner, "sel", ec.generate_private_key(ec.SECP256R1()))


class DNSVerificationTests(unittest.TestCase):
    """
    Verification against the key published in the loopback DNS server and
    fetched with L{Resolver.lookupTXT}.
    """

    @defer.inlineCallbacks
    def _signAndVerify(self, signer: DKIMSigner) -> InlineCallbacks:
        server = startDNSServer(self)
        record = signer.publicKeyRecord()
        server.addTXT(f"{signer.selector}._domainkey.sender.test", record)
        resolver = Resolver([server.address], reactor, timeout=5.0)
        asked = []

        def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
            asked.append(name)
            records: list[bytes] = blockingCallFromThread(
                cast(IReactorFromThreads, reactor), resolver.lookupTXT, name.decode()
            )
            return records[0] if records else None

        signed = signer.sign(MESSAGE, "sender.test")
        ok = yield threads.deferToThread(dkim.verify, signed, dnsfunc=dnsfunc)
        self.assertTrue(ok)
        self.assertEqual(asked, [f"{signer.selector}._domainkey.sender.test.".encode()])
        bad = yield threads.deferToThread(
            dkim.verify, signed.replace(b"Hello Bob", b"Hello Eve"), dnsfunc=dnsfunc
        )
        self.assertFalse(bad)

    def test_rsa(self) -> defer.Deferred[None]:
        """
        An RSA-2048 signature verifies against its split TXT record.
        """
        signer = DKIMSigner("rsa", _RSA_KEY)
        self.assertGreater(len(signer.publicKeyRecord()), 255)
        return self._signAndVerify(signer)

    def test_ed25519(self) -> defer.Deferred[None]:
        """
        An Ed25519 signature verifies against its TXT record.
        """
        return self._signAndVerify(DKIMSigner("ed", _ED_KEY))
