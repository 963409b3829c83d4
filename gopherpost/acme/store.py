# -*- test-case-name: tests.test_acme_store -*-
"""
What ACME keeps on disk, in C{acme/} inside the spool's state directory
(C{.gopherpost/acme/}, mode 0700; every file 0600)::

    account-<id>.json   one ACME account per directory URL: its key (a JWK)
                        and its registration, reused across restarts
    key.pem             the certificate's private key, reused across
                        renewals (so TLSA "3 1 1" records stay valid)
    cert.pem            the current certificate chain, leaf first
    cert.json           what it was ordered for: directory URL and names

Files are replaced atomically and durably (L{gopherpost.durable}).  Every
method blocks on the disk: call them at start-up or in a thread.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gopherpost.durable import replaceFile

__all__ = ["ACMEStore", "CERTIFICATE_KEY_BITS"]

#: The certificate key: RSA, which every SMTP client can use (ECDSA still
#: fails with some old MTAs).
CERTIFICATE_KEY_BITS = 2048


class ACMEStore:
    """
    The ACME files of one server.

    @ivar directory: the C{acme/} directory.
    @ivar certPath: the current certificate chain.
    @ivar keyPath: the certificate's private key.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.certPath = os.path.join(directory, "cert.pem")
        self.keyPath = os.path.join(directory, "key.pem")
        self._metadataPath = os.path.join(directory, "cert.json")
        self._stagedPath = os.path.join(directory, "cert.pem.new")

    def open(self) -> None:
        """
        Create the directory (0700), or tighten it to 0700.

        @raise OSError: it cannot be created.
        """
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        os.chmod(self.directory, 0o700)

    # Accounts

    def _accountPath(self, directoryURL: str) -> str:
        digest = hashlib.sha256(directoryURL.encode("utf-8")).hexdigest()[:16]
        return os.path.join(self.directory, f"account-{digest}.json")

    def loadAccount(self, directoryURL: str) -> dict[str, Any] | None:
        """
        The account kept for C{directoryURL}: C{{"key": <JWK>,
        "registration": <registration resource> or None}}, or L{None} if
        there is none (or its file is unreadable).
        """
        try:
            with open(self._accountPath(directoryURL), "rb") as f:
                account = json.loads(f.read())
        except (OSError, ValueError):
            return None
        if not isinstance(account, dict) or account.get("directory") != directoryURL:
            return None
        if not isinstance(account.get("key"), dict):
            return None
        return {"key": account["key"], "registration": account.get("registration")}

    def saveAccount(
        self, directoryURL: str, key: dict[str, Any], registration: dict[str, Any] | None
    ) -> None:
        """
        Keep the account for C{directoryURL} (mode 0600).

        @param key: the account key as a JWK, private parts included.
        @param registration: the registration resource as JSON, or L{None}
            before the account is registered.
        """
        document = {"directory": directoryURL, "key": key, "registration": registration}
        data = json.dumps(document, indent=1, sort_keys=True).encode("utf-8")
        replaceFile(self._accountPath(directoryURL), data, 0o600)

    # The certificate

    def certificateKeyPEM(self) -> bytes:
        """
        The certificate's private key (PEM), made (RSA 2048) and kept on the
        first call, and again if the file does not load.
        """
        try:
            with open(self.keyPath, "rb") as f:
                data = f.read()
            serialization.load_pem_private_key(data, password=None)
            return data
        except (OSError, ValueError, TypeError):
            pass
        key = rsa.generate_private_key(public_exponent=65537, key_size=CERTIFICATE_KEY_BITS)
        data = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        replaceFile(self.keyPath, data, 0o600)
        return data

    def hasCertificate(self) -> bool:
        """
        Whether a certificate and its key are on disk.
        """
        return os.path.isfile(self.certPath) and os.path.isfile(self.keyPath)

    def stageCertificate(self, chainPEM: bytes) -> str:
        """
        Write a newly issued chain beside the current one (mode 0600), to
        be checked before L{commitCertificate} makes it current.

        @return: the staged file's path.
        """
        replaceFile(self._stagedPath, chainPEM, 0o600)
        return self._stagedPath

    def commitCertificate(self, directoryURL: str, domains: Sequence[str]) -> None:
        """
        Make the staged chain current and record what it was ordered for.
        """
        os.replace(self._stagedPath, self.certPath)
        metadata = {"directory": directoryURL, "domains": list(domains)}
        replaceFile(self._metadataPath, json.dumps(metadata).encode("utf-8"), 0o600)

    def discardStaged(self) -> None:
        """
        Remove a staged chain that was not committed.
        """
        try:
            os.unlink(self._stagedPath)
        except FileNotFoundError:
            pass

    def certificateMetadata(self) -> dict[str, Any]:
        """
        What the current certificate was ordered for: C{directory} and
        C{domains} (empty when unknown).
        """
        try:
            with open(self._metadataPath, "rb") as f:
                metadata = json.loads(f.read())
        except (OSError, ValueError):
            return {}
        return metadata if isinstance(metadata, dict) else {}
