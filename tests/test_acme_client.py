"""
Tests for the parts of L{gopherpost.acme.client} that Pebble does not reach:
error lines, the CSR, Retry-After; the conversation itself is tested
against Pebble in L{tests.test_acme_pebble}.
"""

from __future__ import annotations

import threading

import requests
from acme import challenges, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.acme.challenge import ChallengeResponses
from gopherpost.acme.client import (
    ACMEClient,
    ACMEError,
    _retryAfter,
    describeError,
    makeCSR,
)
from gopherpost.acme.store import ACMEStore


def problem(code: str, detail: str) -> messages.Error:
    return messages.Error(typ="urn:ietf:params:acme:error:" + code, detail=detail)


def authorization(name: str, error: messages.Error | None) -> messages.AuthorizationResource:
    challenge = messages.ChallengeBody(
        chall=challenges.HTTP01(token=b"t" * 32),
        status=messages.STATUS_INVALID,
        error=error,
    )
    body = messages.Authorization(
        identifier=messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=name),
        challenges=[challenge],
        status=messages.STATUS_INVALID,
    )
    return messages.AuthorizationResource(body=body, uri="https://ca.example.test/authz/1")


class DescribeErrorTests(SynchronousTestCase):
    def test_problems(self) -> None:
        self.assertEqual(
            describeError(problem("badNonce", "JWS has an invalid anti-replay nonce")),
            "the CA refused: badNonce: JWS has an invalid anti-replay nonce",
        )
        self.assertEqual(
            describeError(errors.IssuanceError(problem("serverInternal", "oops"))),
            "the CA did not issue: serverInternal: oops",
        )

    def test_validation(self) -> None:
        error = errors.ValidationError(
            [
                authorization("mx.example.test", problem("connection", "Connection refused")),
                authorization("smtp.example.test", None),
            ]
        )
        self.assertEqual(
            describeError(error),
            "validation failed for mx.example.test (connection: Connection refused), "
            "smtp.example.test (no reason given)",
        )

    def test_network(self) -> None:
        error = requests.exceptions.ConnectionError(
            "HTTPSConnectionPool(host='ca.example.test', port=443): Max retries exceeded with "
            "url: /dir (Caused by NewConnectionError('<urllib3.connection.HTTPSConnection object "
            "at 0x7f>: Failed to establish a new connection: [Errno 111] Connection refused'))"
        )
        self.assertEqual(
            describeError(error, "https://ca.example.test/dir"),
            "cannot reach https://ca.example.test/dir: Connection refused",
        )
        self.assertIn(
            "SMTP_ACME_DIRECTORY_CA", describeError(requests.exceptions.SSLError("bad handshake"))
        )
        self.assertEqual(
            describeError(requests.exceptions.ReadTimeout("read timed out"), "X"),
            "cannot reach X: no answer within 20 s",
        )

    def test_reworded(self) -> None:
        self.assertEqual(
            describeError(ValueError("Requesting 127.0.0.1/dir: Connection refused"), "X"),
            "cannot reach X: Connection refused",
        )

    def test_others(self) -> None:
        self.assertEqual(describeError(ACMEError("as is")), "as is")
        self.assertIn("within", describeError(errors.TimeoutError()))
        self.assertEqual(describeError(KeyError("x")), "KeyError: 'x'")


class CSRTests(SynchronousTestCase):
    def test_names(self) -> None:
        """
        The first name is the subject, all of them are in subjectAltName.
        """
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        request = x509.load_pem_x509_csr(makeCSR(pem, ["mx.example.test", "smtp.example.test"]))
        self.assertTrue(request.is_signature_valid)
        self.assertEqual(
            request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value, "mx.example.test"
        )
        names = request.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertEqual(
            names.value.get_values_for_type(x509.DNSName), ["mx.example.test", "smtp.example.test"]
        )

    def test_notRSA(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.assertRaises(ValueError, makeCSR, pem, ["mx.example.test"])


class RetryAfterTests(SynchronousTestCase):
    def test_forms(self) -> None:
        self.assertIsNone(_retryAfter(None))
        self.assertIsNone(_retryAfter("soon"))
        self.assertEqual(_retryAfter("120"), 120.0)
        self.assertEqual(_retryAfter("Wed, 21 Oct 2015 07:28:00 GMT"), 0.0)


class UnreachableTests(SynchronousTestCase):
    def test_connectionRefused(self) -> None:
        """
        A directory nobody answers at: the library's error, which
        L{describeError} makes one line of; the account key is kept for
        the next attempt.
        """
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"https://127.0.0.1:{port}/dir"
        store = ACMEStore(self.mktemp())
        store.open()
        client = ACMEClient(url, store, ChallengeResponses(), timeout=5)
        # acme 2.1 rewords the requests error as a ValueError.
        with self.assertRaises((requests.exceptions.ConnectionError, ValueError)) as caught:
            client.issue(["mx.example.test"], threading.Event())
        self.assertEqual(
            describeError(caught.exception, url), f"cannot reach {url}: Connection refused"
        )
        self.assertIsNotNone(store.loadAccount(url))
