# -*- test-case-name: tests.test_address -*-
"""
RFC 5321 paths: C{MAIL FROM:<reverse-path>} and C{RCPT TO:<forward-path>}.

L{parseCommandArgument} splits the argument of MAIL or RCPT into the path
and its ESMTP parameters; L{parsePath} turns the path into a L{Mailbox}
(or the null reverse-path) or refuses it with the reply to send:

  - any control character (CR, LF, NUL, DEL, ...), also inside a quoted
    local part or after a backslash: C{501 5.1.3} (C{5.1.7} for a sender),
    so an address can never carry one into a header;
  - 8-bit octets (a UTF-8 address) without SMTPUTF8: C{553 5.6.7}
    (RFC 6531 3.5), never an exception;
  - a local part over 64 octets, a domain over 255, a path over 256
    (RFC 5321 4.5.3.1): C{501};
  - anything else that is not RFC 5321 syntax: C{501}.

A source route (C{<@a,@b:user@host>}) is accepted and ignored (RFC 5321
4.1.1.3, C.2).  A recipient without a domain is refused, except
C{<Postmaster>} (any case), which is the postmaster of the server's own
host name (RFC 5321 4.1.1.3).  Dots in a local part are taken as they come
(C{first..last} is common enough); everything else follows the grammar.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from gopherpost.inbound.replies import Reply, printable

__all__ = [
    "Mailbox",
    "NULL_PATH",
    "AddressError",
    "parseCommandArgument",
    "parsePath",
    "LOCAL_PART_LIMIT",
    "DOMAIN_LIMIT",
    "PATH_LIMIT",
]

#: RFC 5321 4.5.3.1.1: octets in a local part.
LOCAL_PART_LIMIT = 64
#: RFC 5321 4.5.3.1.2: octets in a domain.
DOMAIN_LIMIT = 255
#: RFC 5321 4.5.3.1.3: octets in a path, with its punctuation.
PATH_LIMIT = 256

_ATEXT = rb"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"
_DOT_STRING = re.compile(rb"[" + _ATEXT + rb".]+\Z")
# qtextSMTP and quoted-pairSMTP (RFC 5321 4.1.2): printable ASCII only.
_QUOTED_STRING = re.compile(rb'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"\Z')
_LABEL = re.compile(rb"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?\Z")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_EIGHT_BIT = re.compile(rb"[\x80-\xff]")
_GENERAL_LITERAL = re.compile(rb"[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+\Z")
_PATH_ARGUMENT = re.compile(rb"(?i)\s*(FROM|TO)\s*:\s*(.*)\Z", re.S)
_LABEL_TEXT = rb"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
# The common case in one match: <dot-atom@domain>, printable ASCII only.
_SIMPLE_PATH = re.compile(
    rb"<([" + _ATEXT + rb".]{1,64})@(" + _LABEL_TEXT + rb"(?:\." + _LABEL_TEXT + rb")*)>\Z"
)


class AddressError(Exception):
    """
    A path was refused.

    @ivar reply: the reply to send.
    """

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text)
        self.reply = reply


@dataclass(frozen=True)
class Mailbox:
    """
    An envelope address.

    @ivar localPart: as given (with its quotes if quoted).
    @ivar domain: as given, or an address literal with its brackets; C{""}
        for the null reverse-path.
    """

    localPart: str
    domain: str

    @property
    def isNull(self) -> bool:
        """
        Whether this is the null reverse-path C{<>}.
        """
        return not self.localPart and not self.domain

    @property
    def text(self) -> str:
        """
        C{local@domain}, C{""} for the null reverse-path.
        """
        if self.isNull:
            return ""
        return f"{self.localPart}@{self.domain}"

    @property
    def normalizedDomain(self) -> str:
        """
        The domain in lower case, for comparisons.
        """
        return self.domain.lower()

    def __str__(self) -> str:
        return self.text


#: The null reverse-path, C{<>}.
NULL_PATH = Mailbox("", "")


def parseCommandArgument(argument: bytes, keyword: bytes) -> tuple[bytes, bytes] | None:
    """
    Split C{FROM:<path> params} (or C{TO:...}) into the path and the
    parameters.

    Spaces around the colon and a path without angle brackets are
    tolerated, as most servers do; a C{>} inside a quoted local part does
    not end the path.

    @param keyword: C{b"FROM"} or C{b"TO"}.
    @return: C{(path, parameters)} with the path's brackets, or L{None} if
        the argument does not have that shape.
    """
    match = _PATH_ARGUMENT.match(argument)
    if match is None or match.group(1).upper() != keyword:
        return None
    rest = match.group(2)
    if rest.startswith(b"<") and b'"' not in rest:
        end = rest.find(b">")
        if end < 0:
            return None
        parameters = rest[end + 1 :]
        if parameters and not parameters[:1].isspace():
            return None
        return rest[: end + 1], parameters.strip()
    if not rest.startswith(b"<"):
        path, _, parameters = rest.partition(b" ")
        if not path:
            return None
        return b"<" + path + b">", parameters.strip()
    quoted = False
    escaped = False
    for i in range(1, len(rest)):
        c = rest[i]
        if escaped:
            escaped = False
        elif c == 0x5C and quoted:  # backslash
            escaped = True
        elif c == 0x22:  # double quote
            quoted = not quoted
        elif c == 0x3E and not quoted:  # ">"
            parameters = rest[i + 1 :]
            if parameters and not parameters[:1].isspace():
                return None
            return rest[: i + 1], parameters.strip()
    return None


def parsePath(
    path: bytes,
    *,
    sender: bool,
    smtputf8: bool = False,
    postmasterDomain: str | None = None,
) -> Mailbox:
    """
    Parse a path with its angle brackets.

    @param sender: a reverse-path (C{<>} allowed; errors are 5.1.7) or a
        forward-path (errors are 5.1.3).
    @param smtputf8: whether the transaction declared SMTPUTF8 (8-bit in
        the address is then allowed, as UTF-8).
    @param postmasterDomain: the domain of a bare C{<Postmaster>}
        recipient.
    @raise AddressError: with the reply for a refused path.
    """
    simple = _SIMPLE_PATH.match(path)
    if simple is not None and len(path) <= PATH_LIMIT:
        return Mailbox(simple.group(1).decode("ascii"), simple.group(2).decode("ascii"))
    status = "5.1.7" if sender else "5.1.3"
    what = "sender" if sender else "recipient"

    def refuse(problem: str, code: int = 501, status: str = status) -> AddressError:
        return AddressError(Reply(code, f"{status} Bad {what} address syntax: {problem}"))

    if _CONTROL.search(path):
        raise refuse("control characters are not allowed")
    if _EIGHT_BIT.search(path):
        if not smtputf8:
            raise AddressError(Reply(553, "5.6.7 Non-ASCII address not permitted without SMTPUTF8"))
        try:
            path.decode("utf-8")
        except UnicodeDecodeError:
            raise refuse("not UTF-8") from None
    if len(path) > PATH_LIMIT:
        raise refuse(f"path too long ({PATH_LIMIT} octets at most)")
    if not (path.startswith(b"<") and path.endswith(b">")):
        raise refuse("missing angle brackets")
    inner = path[1:-1]
    if not inner:
        if sender:
            return NULL_PATH
        raise refuse("empty address")
    if inner.startswith(b"@"):
        route, colon, inner = inner.partition(b":")
        if not colon or not all(
            hop.startswith(b"@") and _isDomain(hop[1:]) for hop in route.split(b",")
        ):
            raise refuse("bad source route")
    localPart, domain = _splitMailbox(inner)
    if localPart is None:
        raise refuse(f"<{printable(inner)}>")
    if len(localPart) > LOCAL_PART_LIMIT:
        raise refuse(f"local part too long ({LOCAL_PART_LIMIT} octets at most)")
    if not (_DOT_STRING.match(localPart) or _QUOTED_STRING.match(localPart)) and not (
        smtputf8 and _isUTF8LocalPart(localPart)
    ):
        raise refuse(f"bad local part in <{printable(inner)}>")
    if domain is None:
        if not sender and postmasterDomain and localPart.lower() == b"postmaster":
            return Mailbox("postmaster", postmasterDomain)
        raise refuse(f"<{printable(inner)}>: need fully-qualified address")
    if len(domain) > DOMAIN_LIMIT:
        raise refuse(f"domain too long ({DOMAIN_LIMIT} octets at most)")
    if not (_isDomain(domain) or _isAddressLiteral(domain)) and not (
        smtputf8 and _isUTF8Domain(domain)
    ):
        raise refuse(f"bad domain in <{printable(inner)}>")
    return Mailbox(localPart.decode("utf-8"), domain.decode("utf-8"))


def _splitMailbox(inner: bytes) -> tuple[bytes | None, bytes | None]:
    """
    C{(localPart, domain)}; C{domain} is L{None} without an C{@}, and
    C{localPart} is L{None} if a quoted local part is not closed.
    """
    if inner.startswith(b'"'):
        escaped = False
        for i in range(1, len(inner)):
            c = inner[i]
            if escaped:
                escaped = False
            elif c == 0x5C:
                escaped = True
            elif c == 0x22:
                rest = inner[i + 1 :]
                if not rest:
                    return inner, None
                if not rest.startswith(b"@"):
                    return None, None
                return inner[: i + 1], rest[1:]
        return None, None
    localPart, at, domain = inner.rpartition(b"@")
    if not at:
        return inner, None
    return localPart, domain


def _isDomain(domain: bytes) -> bool:
    if not domain:
        return False
    return all(_LABEL.match(label) and len(label) <= 63 for label in domain.split(b"."))


def _isAddressLiteral(domain: bytes) -> bool:
    if not (domain.startswith(b"[") and domain.endswith(b"]")):
        return False
    literal = domain[1:-1].decode("ascii", "replace")
    if literal[:5].lower() == "ipv6:":
        try:
            ipaddress.IPv6Address(literal[5:])
        except ValueError:
            return False
        return True
    try:
        ipaddress.IPv4Address(literal)
    except ValueError:
        return bool(_GENERAL_LITERAL.match(domain[1:-1]))
    return True


def _isUTF8LocalPart(localPart: bytes) -> bool:
    # RFC 6531: atext extended with UTF8-non-ascii.
    ascii = _EIGHT_BIT.sub(b"a", localPart)
    return bool(_DOT_STRING.match(ascii) or _QUOTED_STRING.match(ascii))


def _isUTF8Domain(domain: bytes) -> bool:
    return _isDomain(_EIGHT_BIT.sub(b"a", domain))
