# -*- test-case-name: tests.test_auth_users -*-
"""
The password hashes of the users file: scrypt from the standard library,
in the format the web UI's C{SMTP_WEB_AUTH} uses
(L{gopherpost.webui.password})::

    scrypt:32768:8:1$<salt>$<hex digest>

The parameters (N, r, p) are stored with each hash, so they can be raised
later: a hash keeps working with the parameters it was made with, and
C{gopherpostctl user passwd} writes new ones.  The users file takes only
hashes at least as costly as N=2^14, r=8 (so a weak hash cannot slip in
through a hand edit) and at most L{MAX_MEMORY} (so one cannot exhaust the
server's memory).
"""

from __future__ import annotations

import secrets

from gopherpost.webui.password import DEFAULT_N, DEFAULT_P, DEFAULT_R, ScryptHash, parseScryptHash
from gopherpost.webui.password import hashPassword as _hashPassword

__all__ = [
    "MIN_N",
    "MIN_R",
    "MAX_MEMORY",
    "ScryptHash",
    "decoyHash",
    "hashPassword",
    "parseUserHash",
]

#: The least cost a stored hash may have.
MIN_N = 2**14
MIN_R = 8
#: The most memory one verification may take (128 * N * r * p octets).
MAX_MEMORY = 256 * 1024 * 1024


def parseUserHash(text: str) -> ScryptHash:
    """
    Parse a users file hash and check its cost.

    @raise ValueError: with a one-line reason.
    """
    parsed = parseScryptHash(text)
    if parsed.n < MIN_N or parsed.r < MIN_R:
        raise ValueError(
            f"the hash is too weak (N={parsed.n}, r={parsed.r}; at least N={MIN_N}, "
            f"r={MIN_R}): set the password again"
        )
    if 128 * parsed.n * parsed.r * parsed.p > MAX_MEMORY:
        raise ValueError(
            f"the hash would take more than {MAX_MEMORY // 2**20} MiB to check "
            f"(N={parsed.n}, r={parsed.r}, p={parsed.p})"
        )
    return parsed


def hashPassword(password: str) -> ScryptHash:
    """
    A new hash of C{password} with a random salt and today's parameters
    (N=2^15, r=8, p=1: about 32 MiB and a few tens of milliseconds).
    """
    return _hashPassword(password, DEFAULT_N, DEFAULT_R, DEFAULT_P)


def decoyHash() -> ScryptHash:
    """
    A hash no password matches, with today's parameters: checked for user
    names that do not exist, so that the time an answer takes does not tell
    which names do.
    """
    return ScryptHash(
        DEFAULT_N, DEFAULT_R, DEFAULT_P, secrets.token_urlsafe(12), secrets.token_bytes(64)
    )
