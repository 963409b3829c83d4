# -*- test-case-name: tests.test_webui_access -*-
"""
Password hashes for C{SMTP_WEB_AUTH}: scrypt (the standard library's
L{hashlib.scrypt}), written as Werkzeug writes them::

    scrypt:32768:8:1$<salt>$<hex digest>

(C{N}, C{r}, C{p}, then a printable salt and the 64-byte digest in hex), so
a hash made by C{werkzeug.security.generate_password_hash(password,
"scrypt")} works too.  Make one with::

    python3 -m gopherpost.webui.password [user]

which asks for the password twice and prints the C{user:hash} value of
C{SMTP_WEB_AUTH}.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import secrets
import sys
from dataclasses import dataclass

__all__ = ["ScryptHash", "hashPassword", "parseScryptHash", "main"]

#: Cost parameters of new hashes: Werkzeug's defaults (32 MiB, ~0.1 s).
DEFAULT_N = 32768
DEFAULT_R = 8
DEFAULT_P = 1
_DIGEST_BYTES = 64


@dataclass(frozen=True)
class ScryptHash:
    """
    A parsed scrypt password hash.

    @ivar n: the CPU/memory cost (a power of two).
    @ivar r: the block size.
    @ivar p: the parallelism.
    @ivar salt: the salt, as written.
    @ivar digest: the expected derived key.
    """

    n: int
    r: int
    p: int
    salt: str
    digest: bytes

    def verify(self, password: str) -> bool:
        """
        Whether C{password} has this hash (slow: call it in a thread).
        """
        derived = hashlib.scrypt(
            password.encode("utf-8"),
            salt=self.salt.encode("utf-8"),
            n=self.n,
            r=self.r,
            p=self.p,
            maxmem=132 * self.n * self.r * self.p + 1024 * 1024,
            dklen=len(self.digest),
        )
        return hmac.compare_digest(derived, self.digest)

    def __str__(self) -> str:
        return f"scrypt:{self.n}:{self.r}:{self.p}${self.salt}${self.digest.hex()}"


def parseScryptHash(text: str) -> ScryptHash:
    """
    Parse C{scrypt:N:r:p$salt$hexdigest}.

    @raise ValueError: with a one-line reason, if C{text} is not such a hash.
    """
    method, _, rest = text.partition("$")
    salt, _, hexDigest = rest.partition("$")
    parts = method.split(":")
    if len(parts) != 4 or parts[0] != "scrypt":
        raise ValueError("the hash must look like scrypt:32768:8:1$<salt>$<hex digest>")
    try:
        n, r, p = (int(x, 10) for x in parts[1:])
    except ValueError:
        raise ValueError("scrypt:N:r:p must be whole numbers") from None
    if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 or n > 2**20:
        raise ValueError("N must be a power of two up to 2^20, r 1..64, p 1..16")
    if not salt or not salt.isprintable() or any(c.isspace() for c in salt):
        raise ValueError("the salt must be printable text without spaces")
    try:
        digest = bytes.fromhex(hexDigest)
    except ValueError:
        raise ValueError("the digest must be hexadecimal") from None
    if len(digest) < 16:
        raise ValueError("the digest is too short")
    return ScryptHash(n, r, p, salt, digest)


def hashPassword(
    password: str, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P
) -> ScryptHash:
    """
    Hash C{password} with a new random salt.
    """
    salt = secrets.token_urlsafe(12)
    digest = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt.encode("utf-8"),
        n=n,
        r=r,
        p=p,
        maxmem=132 * n * r * p + 1024 * 1024,
        dklen=_DIGEST_BYTES,
    )
    return ScryptHash(n, r, p, salt, digest)


def main(argv: list[str] | None = None) -> int:
    """
    Ask for a password and print C{user:hash} for C{SMTP_WEB_AUTH}.
    """
    args = sys.argv[1:] if argv is None else argv
    user = args[0] if args else input("User name: ").strip()
    if not user or ":" in user or any(c.isspace() for c in user):
        print("gopherpost: the user name must be non-empty, without ':' or spaces", file=sys.stderr)
        return 2
    password = getpass.getpass("Password: ")
    if password != getpass.getpass("Again: "):
        print("gopherpost: the passwords differ", file=sys.stderr)
        return 1
    if not password:
        print("gopherpost: the password is empty", file=sys.stderr)
        return 1
    print(f"{user}:{hashPassword(password)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
