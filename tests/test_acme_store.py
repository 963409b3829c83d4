"""
Tests for L{gopherpost.acme.store.ACMEStore}.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.acme.store import ACMEStore

DIRECTORY = "https://ca.example.test/directory"


class StoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = os.path.join(self.mktemp(), "acme")
        self.store = ACMEStore(self.path)
        self.store.open()

    def mode(self, path: str) -> int:
        return os.stat(path).st_mode & 0o777

    def test_directoryMode(self) -> None:
        """
        The directory is 0700, also when it existed with a looser mode.
        """
        self.assertEqual(self.mode(self.path), 0o700)
        os.chmod(self.path, 0o755)
        self.store.open()
        self.assertEqual(self.mode(self.path), 0o700)

    def test_account(self) -> None:
        """
        An account is kept per directory URL, mode 0600.
        """
        self.assertIsNone(self.store.loadAccount(DIRECTORY))
        self.store.saveAccount(DIRECTORY, {"kty": "RSA", "n": "x"}, None)
        self.assertEqual(
            self.store.loadAccount(DIRECTORY),
            {"key": {"kty": "RSA", "n": "x"}, "registration": None},
        )
        self.store.saveAccount(DIRECTORY, {"kty": "RSA", "n": "x"}, {"uri": "https://a/1"})
        stored = self.store.loadAccount(DIRECTORY)
        assert stored is not None
        self.assertEqual(stored["registration"], {"uri": "https://a/1"})
        self.assertIsNone(self.store.loadAccount("https://staging.example.test/directory"))
        (name,) = [n for n in os.listdir(self.path) if n.startswith("account-")]
        self.assertEqual(self.mode(os.path.join(self.path, name)), 0o600)

    def test_corruptAccount(self) -> None:
        self.store.saveAccount(DIRECTORY, {"kty": "RSA"}, None)
        (name,) = os.listdir(self.path)
        with open(os.path.join(self.path, name), "w") as f:
            f.write("{not json")
        self.assertIsNone(self.store.loadAccount(DIRECTORY))

    def test_certificateKey(self) -> None:
        """
        The certificate key is made once (RSA 2048, mode 0600) and reused;
        an unloadable one is replaced.
        """
        first = self.store.certificateKeyPEM()
        key = serialization.load_pem_private_key(first, password=None)
        self.assertIsInstance(key, rsa.RSAPrivateKey)
        self.assertEqual(key.key_size, 2048)  # type: ignore[union-attr]
        self.assertEqual(self.store.certificateKeyPEM(), first)
        self.assertEqual(self.mode(self.store.keyPath), 0o600)
        with open(self.store.keyPath, "wb") as f:
            f.write(b"garbage")
        self.assertNotEqual(self.store.certificateKeyPEM(), first)

    def test_stageCommitDiscard(self) -> None:
        """
        A staged chain becomes current only when committed, with its
        metadata; a discarded one leaves the current one alone.
        """
        self.assertFalse(self.store.hasCertificate())
        self.assertEqual(self.store.certificateMetadata(), {})
        self.store.certificateKeyPEM()
        staged = self.store.stageCertificate(b"chain one")
        self.assertEqual(self.mode(staged), 0o600)
        self.assertFalse(self.store.hasCertificate())
        self.store.commitCertificate(DIRECTORY, ["mx.example.test"])
        self.assertTrue(self.store.hasCertificate())
        self.assertEqual(self.mode(self.store.certPath), 0o600)
        self.assertEqual(
            self.store.certificateMetadata(),
            {"directory": DIRECTORY, "domains": ["mx.example.test"]},
        )
        self.store.stageCertificate(b"chain two")
        self.store.discardStaged()
        self.store.discardStaged()
        with open(self.store.certPath, "rb") as f:
            self.assertEqual(f.read(), b"chain one")
        self.assertEqual(sorted(os.listdir(self.path)), ["cert.json", "cert.pem", "key.pem"])
