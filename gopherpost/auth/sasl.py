# -*- test-case-name: tests.test_auth_sasl -*-
"""
The SASL exchanges of SMTP AUTH (RFC 4954): PLAIN (RFC 4616) and LOGIN, as
small state machines without I/O.

An exchange starts with the initial response of the AUTH command (or none)
and then takes one decoded client response at a time; each step is either
a L{Challenge} (the server sends C{334} and the base64 of its data) or the
L{Credentials} the exchange proved to carry.  Anything that is not a valid
message of the mechanism raises L{SASLError}, whose C{kind} says how to
answer: nothing here raises anything else, whatever the client sends.

L{decodeResponse} turns a response line into octets: C{*} cancels (RFC
4954 section 4), C{=} is the empty initial response, a line over
L{MAX_RESPONSE} octets is too long, and anything that is not strict base64
is malformed.

User names and passwords are UTF-8 and compared as they are (no SASLprep
mapping): a password is what the client typed, octet for octet.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "ABORTED",
    "AUTHZID",
    "MALFORMED",
    "MAX_FIELD",
    "MAX_RESPONSE",
    "MECHANISMS",
    "TOO_LONG",
    "Challenge",
    "Credentials",
    "LoginExchange",
    "PlainExchange",
    "SASLError",
    "decodeResponse",
]

#: The longest response line (or AUTH command line), in octets (RFC 4954
#: section 4).
MAX_RESPONSE = 12288
#: The longest user name or password, in octets.
MAX_FIELD = 1024

#: L{SASLError} kinds.
ABORTED = "aborted"
MALFORMED = "malformed"
TOO_LONG = "too-long"
AUTHZID = "authzid"


class SASLError(Exception):
    """
    The client's response ends the exchange.

    @ivar kind: L{ABORTED} (the client sent C{*}), L{MALFORMED} (not base64,
        or not a message of the mechanism), L{TOO_LONG} (over
        L{MAX_RESPONSE}) or L{AUTHZID} (PLAIN asked to act as another user).
    @ivar detail: what was wrong, for the log (never for the client).
    """

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass(frozen=True)
class Challenge:
    """
    The server's next challenge: C{334} followed by the base64 of C{data}.
    """

    data: bytes

    @property
    def text(self) -> str:
        """
        The text after C{334 } (empty for an empty challenge).
        """
        return base64.b64encode(self.data).decode("ascii")


@dataclass(frozen=True)
class Credentials:
    """
    What an exchange proved to carry: a user name and a password, to check.
    """

    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<hidden>)"


def decodeResponse(line: bytes, initial: bool = False) -> bytes:
    """
    The octets of a client response.

    @param line: the response line without its line end (or the initial
        response argument of the AUTH command).
    @param initial: whether it is the AUTH command's initial response,
        where C{=} stands for an empty one.
    @raise SASLError: L{ABORTED} for C{*}, L{TOO_LONG}, L{MALFORMED}.
    """
    if len(line) > MAX_RESPONSE:
        raise SASLError(TOO_LONG, f"a response of {len(line)} octets")
    text = line.strip(b" \t")
    if text == b"*":
        raise SASLError(ABORTED, "the client cancelled")
    if text == b"=" and initial:
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SASLError(MALFORMED, "not base64") from None


def _text(data: bytes, what: str) -> str:
    """
    One field of a message: non-empty UTF-8 without NUL, at most
    L{MAX_FIELD} octets.
    """
    if not data:
        raise SASLError(MALFORMED, f"an empty {what}")
    if len(data) > MAX_FIELD:
        raise SASLError(MALFORMED, f"a {what} of {len(data)} octets")
    if b"\0" in data:
        raise SASLError(MALFORMED, f"a NUL in the {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SASLError(MALFORMED, f"the {what} is not UTF-8") from None


def _username(data: bytes) -> str:
    name = _text(data, "user name")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise SASLError(MALFORMED, "a control character in the user name")
    return name


class PlainExchange:
    """
    PLAIN (RFC 4616): one message C{[authzid] NUL authcid NUL passwd}.

    An authorization identity is accepted only when it names the user who
    authenticates (any case); acting as someone else is refused
    (L{AUTHZID}).
    """

    name: ClassVar[str] = "PLAIN"

    def start(self, initial: bytes | None) -> Challenge | Credentials:
        """
        The AUTH command: its decoded initial response, or L{None}.
        """
        if initial is None:
            return Challenge(b"")
        return self._credentials(initial)

    def respond(self, data: bytes) -> Challenge | Credentials:
        """
        The client's decoded response to the empty challenge.
        """
        return self._credentials(data)

    def _credentials(self, message: bytes) -> Credentials:
        parts = message.split(b"\0")
        if len(parts) != 3:
            raise SASLError(MALFORMED, f"{len(parts) - 1} NULs in a PLAIN message (2 expected)")
        authzid, authcid, passwd = parts
        username = _username(authcid)
        password = _text(passwd, "password")
        if authzid:
            try:
                wanted = authzid.decode("utf-8")
            except UnicodeDecodeError:
                raise SASLError(MALFORMED, "the authorization identity is not UTF-8") from None
            if wanted.lower() != username.lower():
                raise SASLError(AUTHZID, f"user {username!r} asked to act as {wanted!r}")
        return Credentials(username, password)


class LoginExchange:
    """
    LOGIN (draft-murchison-sasl-login): C{334 Username:}, then
    C{334 Password:}.  An initial response is the user name.
    """

    name: ClassVar[str] = "LOGIN"
    USERNAME = Challenge(b"Username:")
    PASSWORD = Challenge(b"Password:")

    def __init__(self) -> None:
        self._username: str | None = None

    def start(self, initial: bytes | None) -> Challenge | Credentials:
        """
        The AUTH command: its decoded initial response (the user name), or
        L{None}.
        """
        if initial is None:
            return self.USERNAME
        self._username = _username(initial)
        return self.PASSWORD

    def respond(self, data: bytes) -> Challenge | Credentials:
        """
        The client's decoded response: the user name, then the password.
        """
        if self._username is None:
            self._username = _username(data)
            return self.PASSWORD
        return Credentials(self._username, _text(data, "password"))


#: The mechanisms offered, in the order of the EHLO keyword.
MECHANISMS: dict[str, type[PlainExchange] | type[LoginExchange]] = {
    "PLAIN": PlainExchange,
    "LOGIN": LoginExchange,
}
