# -*- test-case-name: tests.test_dkim -*-
"""
DKIM signing (RFC 6376, RFC 8463) of outbound mail, with dkimpy.

Signing is on when any C{SMTP_DKIM_*} variable is set.  The private key
comes from C{SMTP_DKIM_PRIVATE_KEY} (inline PEM; wins) or the file named by
C{SMTP_DKIM_KEY_PATH}; RSA (PKCS#1 or PKCS#8 PEM) and Ed25519 (PKCS#8 PEM,
or the base64 32-octet seed that dkimpy's C{dknewkey} writes) are accepted.
L{loadSigner} checks all of this at start-up, raising
L{gopherpost.config.ConfigError} so that a bad key stops the server before
it binds.

dkimpy signs Ed25519 through PyNaCl (its C{ed25519} extra; Debian's
C{python3-nacl}), a dependency of GopherPost.
"""

from __future__ import annotations

import base64
import binascii

import dkim as _dkimpy
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from gopherpost.config import ConfigError

__all__ = [
    "SIGNED_HEADERS",
    "DKIMSignError",
    "DKIMSigner",
    "loadSigner",
    "parsePrivateKey",
]

#: The header fields signed when present, in this order (the reference's).
SIGNED_HEADERS = (
    "from",
    "to",
    "subject",
    "date",
    "mime-version",
    "content-type",
    "message-id",
)

#: RSA keys smaller than this are refused (dkimpy will not verify them).
MINIMUM_RSA_BITS = 1024


class DKIMSignError(Exception):
    """
    A message cannot be signed (no From header, no signing domain, or
    dkimpy refused it).  The caller should deliver it unsigned and log.
    """


class DKIMSigner:
    """
    Signs messages with one key and selector.

    Instances hold no per-message state: L{sign} may run in any thread.

    @ivar selector: the selector (C{s=}).
    @ivar domain: the fixed signing domain (C{SMTP_DKIM_DOMAIN}), or
        L{None} to sign as the sender's domain.
    @ivar algorithm: C{"rsa-sha256"} or C{"ed25519-sha256"}.
    """

    def __init__(
        self,
        selector: str,
        privateKey: object,
        domain: str | None = None,
    ) -> None:
        """
        @param selector: see L{DKIMSigner.selector}.
        @param privateKey: a C{cryptography} RSA or Ed25519 private key, e.g.
            from L{parsePrivateKey}.
        @param domain: see L{DKIMSigner.domain}.
        @raise TypeError: for another kind of key.
        """
        self.selector = selector.lower()
        self.domain = domain.rstrip(".").lower() if domain else None
        if isinstance(privateKey, rsa.RSAPrivateKey):
            self.algorithm = "rsa-sha256"
            # dkimpy reads PKCS#1 PEM in every version.
            self._dkimpyKey = privateKey.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
            spki = privateKey.public_key().public_bytes(
                serialization.Encoding.DER,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
            self._publicRecord = "v=DKIM1; k=rsa; p=" + base64.b64encode(spki).decode()
        elif isinstance(privateKey, ed25519.Ed25519PrivateKey):
            self.algorithm = "ed25519-sha256"
            seed = privateKey.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            # dkimpy wants the raw 32-octet seed, base64.
            self._dkimpyKey = base64.b64encode(seed)
            raw = privateKey.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            self._publicRecord = "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode()
        else:
            raise TypeError(f"not an RSA or Ed25519 private key: {type(privateKey)!r}")

    def publicKeyRecord(self) -> str:
        """
        The TXT record to publish at C{<selector>._domainkey.<domain>}.
        """
        return self._publicRecord

    def signingDomain(self, message: bytes, senderDomain: str | None) -> str | None:
        """
        The C{d=} this signer uses for C{message}: L{domain}, else
        C{senderDomain}, else the domain of the From header.
        """
        for candidate in (self.domain, senderDomain, _fromDomain(message)):
            if candidate:
                return candidate.strip().rstrip(".").lower()
        return None

    def sign(self, message: bytes, senderDomain: str | None = None) -> bytes:
        """
        Sign a message.

        @param message: the message as stored (header, blank line, body;
            CRLF line ends).
        @param senderDomain: the domain of the envelope sender, used when no
            C{SMTP_DKIM_DOMAIN} is configured.
        @return: C{message} with a C{DKIM-Signature} header field prepended
            (CRLF line ends), or C{message} unchanged when it already has a
            signature with our C{d=} and C{s=}.
        @raise DKIMSignError: when the message cannot be signed.
        """
        domain = self.signingDomain(message, senderDomain)
        if not domain:
            raise DKIMSignError("no signing domain (no SMTP_DKIM_DOMAIN and no sender domain)")
        try:
            domainBytes = domain.encode("ascii")
        except UnicodeEncodeError:
            try:
                domainBytes = domain.encode("idna")
            except UnicodeError:
                raise DKIMSignError(f"cannot sign for domain {domain!r}") from None
        headers = _headers(message)
        if self._alreadySigned(headers, domainBytes):
            return message
        present = {name.lower() for name, _ in headers}
        include = [h.encode("ascii") for h in SIGNED_HEADERS if h.encode("ascii") in present]
        if b"from" not in include:
            raise DKIMSignError("message has no From header field")
        try:
            signature = _dkimpy.sign(
                message,
                self.selector.encode("ascii"),
                domainBytes,
                self._dkimpyKey,
                canonicalize=(b"relaxed", b"relaxed"),
                signature_algorithm=self.algorithm.encode("ascii"),
                include_headers=include,
                linesep=b"\r\n",
            )
        except _dkimpy.DKIMException as e:
            raise DKIMSignError(f"dkimpy refused to sign: {e}") from e
        return signature + message

    def _alreadySigned(self, headers: list[tuple[bytes, bytes]], domain: bytes) -> bool:
        selector = self.selector.encode("ascii")
        for name, value in headers:
            if name.lower() != b"dkim-signature":
                continue
            try:
                tags = _dkimpy.parse_tag_value(b"".join(value.split()))
            except Exception:
                continue
            if (
                tags.get(b"d", b"").lower().rstrip(b".") == domain
                and tags.get(b"s", b"").lower() == selector
            ):
                return True
        return False


def _headers(message: bytes) -> list[tuple[bytes, bytes]]:
    try:
        headers, _ = _dkimpy.rfc822_parse(message)
    except Exception:
        return []
    return headers


def _fromDomain(message: bytes) -> str | None:
    from email.utils import getaddresses

    for name, value in _headers(message):
        if name.lower() == b"from":
            text = value.decode("utf-8", "replace").replace("\r", "").replace("\n", "")
            for _, address in getaddresses([text]):
                if "@" in address:
                    return address.rsplit("@", 1)[1]
    return None


def parsePrivateKey(data: bytes, variable: str) -> object:
    """
    Parse a DKIM private key.

    @param data: PEM (RSA PKCS#1 or PKCS#8, Ed25519 PKCS#8), or the base64
        of a raw 32-octet Ed25519 seed.
    @param variable: the variable the key came from, for errors.
    @return: a C{cryptography} private key.
    @raise ConfigError: naming C{variable} when the key is unusable.
    """
    text = data.strip()
    if not text:
        raise ConfigError(variable, "the DKIM private key is empty")
    if b"-----BEGIN" not in text:
        try:
            seed = base64.b64decode(b"".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            seed = b""
        if len(seed) == 32:
            return ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        raise ConfigError(variable, "is not a PEM private key (no -----BEGIN line)")
    try:
        key = serialization.load_pem_private_key(text, password=None)
    except TypeError:
        raise ConfigError(
            variable, "the DKIM private key is encrypted; provide it unencrypted"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise ConfigError(variable, f"cannot load the DKIM private key: {_oneLine(e)}") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MINIMUM_RSA_BITS:
            raise ConfigError(
                variable,
                f"the RSA key has {key.key_size} bits; DKIM needs at least "
                f"{MINIMUM_RSA_BITS} (use 2048)",
            )
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise ConfigError(variable, f"unsupported key type {type(key).__name__}; use RSA or Ed25519")


def _oneLine(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text[:200] or type(e).__name__


def loadSigner(settings: object) -> DKIMSigner | None:
    """
    The DKIM signer configured by C{SMTP_DKIM_*}, or L{None} when DKIM is
    off.

    The key is read here, at start-up: C{SMTP_DKIM_PRIVATE_KEY} (a literal
    C{\\n} in it stands for a line break, as env files often have) wins over
    C{SMTP_DKIM_KEY_PATH}.

    @param settings: a L{gopherpost.config.Settings}.
    @raise ConfigError: naming the variable at fault (selector missing, key
        missing, unreadable, or not a usable key).
    """
    if not settings.dkimEnabled:  # type: ignore[attr-defined]
        return None
    selector = settings.dkimSelector  # type: ignore[attr-defined]
    if not selector:
        raise ConfigError("SMTP_DKIM_SELECTOR", "is required when any SMTP_DKIM_* variable is set")
    inline = settings.dkimPrivateKey  # type: ignore[attr-defined]
    path = settings.dkimKeyPath  # type: ignore[attr-defined]
    if inline is not None and inline.strip():
        variable = "SMTP_DKIM_PRIVATE_KEY"
        data = inline.replace("\\r", "").replace("\\n", "\n").strip().strip("'\"")
        try:
            raw = data.encode("ascii")
        except UnicodeEncodeError:
            raise ConfigError(
                variable, "the DKIM private key contains non-ASCII characters"
            ) from None
    elif path:
        variable = "SMTP_DKIM_KEY_PATH"
        try:
            with open(path, "rb") as f:
                raw = f.read(1024 * 1024)
        except OSError as e:
            raise ConfigError(variable, f"cannot read {path!r}: {e.strerror or e}") from None
    else:
        raise ConfigError(
            "SMTP_DKIM_KEY_PATH",
            "DKIM is enabled but neither SMTP_DKIM_PRIVATE_KEY nor SMTP_DKIM_KEY_PATH is set",
        )
    key = parsePrivateKey(raw, variable)
    return DKIMSigner(selector, key, settings.dkimDomain)  # type: ignore[attr-defined]


# Ed25519 without PyNaCl.
