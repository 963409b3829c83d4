"""
Tests for L{gopherpost.webhooks.signing}: Standard Webhooks signatures,
checked against the reference library.
"""

from __future__ import annotations

import base64
import time

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.webhooks.signing import MIN_KEY_BYTES, parseSecret, signature, signedHeaders
from tests.support.webhooks import ReceivedRequest, loadStandardWebhooks, newSecret, verifyWebhook


class ParseSecretTests(SynchronousTestCase):
    def test_key(self) -> None:
        key = bytes(range(32))
        self.assertEqual(parseSecret("whsec_" + base64.b64encode(key).decode()), key)

    def test_unpadded(self) -> None:
        """
        Missing base64 padding is tolerated, as the reference library does.
        """
        key = bytes(range(25))
        encoded = base64.b64encode(key).decode().rstrip("=")
        self.assertEqual(parseSecret("whsec_" + encoded), key)

    def test_prefix(self) -> None:
        with self.assertRaises(ValueError) as caught:
            parseSecret(base64.b64encode(bytes(32)).decode())
        self.assertIn("whsec_", str(caught.exception))

    def test_notBase64(self) -> None:
        with self.assertRaises(ValueError) as caught:
            parseSecret("whsec_not*base64!")
        self.assertIn("not base64", str(caught.exception))

    def test_short(self) -> None:
        with self.assertRaises(ValueError) as caught:
            parseSecret("whsec_" + base64.b64encode(bytes(MIN_KEY_BYTES - 1)).decode())
        self.assertIn(f"at least {MIN_KEY_BYTES}", str(caught.exception))


class SignatureTests(SynchronousTestCase):
    def test_knownValue(self) -> None:
        """
        The example of the Standard Webhooks specification's test vectors:
        HMAC-SHA256 of C{id.timestamp.body}, base64, prefixed C{v1,}.
        """
        key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        self.assertEqual(
            signature(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        )

    def test_referenceLibraryVerifies(self) -> None:
        """
        What L{signedHeaders} produces verifies with the C{standardwebhooks}
        library, and fails with another secret or another body.
        """
        library = loadStandardWebhooks()
        secret = newSecret()
        body = '{"id":"0123","subject":"café"}'.encode()
        headers = signedHeaders(parseSecret(secret), "0123", int(time.time()), body)
        request = ReceivedRequest("POST", "/", headers, body, 200)
        self.assertEqual(verifyWebhook(secret, request)["subject"], "café")
        with self.assertRaises(library.WebhookVerificationError):
            library.Webhook(newSecret()).verify(body, headers)
        with self.assertRaises(library.WebhookVerificationError):
            library.Webhook(secret).verify(body + b" ", headers)

    def test_headers(self) -> None:
        headers = signedHeaders(bytes(32), "abc", 1700000000, b"{}")
        self.assertEqual(headers["webhook-id"], "abc")
        self.assertEqual(headers["webhook-timestamp"], "1700000000")
        self.assertTrue(headers["webhook-signature"].startswith("v1,"))
