# -*- test-case-name: tests.test_tlspolicy_sts -*-
"""
MTA-STS (RFC 8461) as data: the C{_mta-sts} TXT record (section 3.1), the
policy file (section 3.2) and the matching of MX host names against the
policy's C{mx} patterns (section 4.1).  Pure functions, no I/O.

Parsing is strict, as the RFC's grammar says: case-sensitive keywords, one
field per line ending in LF or CRLF, no blank lines, C{max_age} of at most
ten digits and at most 31557600 (a year), C{mx} patterns as RFC 5321
domains in A-labels with an optional leading C{*.}.  Unknown fields are
ignored; of a repeated field other than C{mx} only the first counts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ENFORCE",
    "TESTING",
    "NONE",
    "MAX_AGE_LIMIT",
    "STSError",
    "STSRecord",
    "STSPolicy",
    "parseRecord",
    "selectRecord",
    "parsePolicy",
    "matchesPattern",
]

#: Policy mode: deliver only to matching MX hosts, over verified TLS.
ENFORCE = "enforce"
#: Policy mode: deliver as usual, report what would have failed.
TESTING = "testing"
#: Policy mode: the domain has withdrawn its policy.
NONE = "none"

#: The largest C{max_age} a policy may have, in seconds (RFC 8461 3.2).
MAX_AGE_LIMIT = 31557600

_WSP = "[ \t]*"
_RECORD_VERSION = "v=STSv1"
_SEPARATOR = re.compile(rf"{_WSP};{_WSP}")
_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_EXTENSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}")
_RECORD_EXTENSION_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
_POLICY_LINE = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.\-]{0,31}):[ \t]*(.*?)[ \t]*")
_POLICY_VALUE = re.compile(r"[^\x00-\x20\x7f]([^\x00-\x1f\x7f]*[^\x00-\x20\x7f])?")
_MAX_AGE = re.compile(r"[0-9]{1,10}")
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?")
_MODES = (ENFORCE, TESTING, NONE)


class STSError(ValueError):
    """
    A TXT record or a policy does not follow RFC 8461.

    @ivar reason: what is wrong, one line.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class STSRecord:
    """
    A C{_mta-sts.<domain>} TXT record.

    @ivar id: the policy instance id: a new one means a new policy.
    """

    id: str


@dataclass(frozen=True)
class STSPolicy:
    """
    A parsed MTA-STS policy.

    @ivar mode: L{ENFORCE}, L{TESTING} or L{NONE}.
    @ivar maxAge: seconds the policy may be cached.
    @ivar mx: the MX patterns, lower case (C{"mx.example.test"},
        C{"*.example.test"}).
    @ivar text: the policy file as it was served (decoded), for the cache
        and for TLS reports.
    """

    mode: str
    maxAge: int
    mx: tuple[str, ...]
    text: str

    def matches(self, hostname: str) -> bool:
        """
        Whether an MX host name matches one of the policy's patterns.
        """
        return any(matchesPattern(pattern, hostname) for pattern in self.mx)

    @property
    def lines(self) -> list[str]:
        """
        The policy's lines, as TLS reports quote them (RFC 8460 4.4's
        C{policy-string}).
        """
        return [line.rstrip("\r") for line in self.text.split("\n") if line.rstrip("\r")]


def parseRecord(text: str) -> STSRecord:
    """
    Parse one TXT record that begins with C{v=STSv1} (RFC 8461 3.1).

    @raise STSError: it does not follow the grammar, or has no C{id}.
    """
    if not text.startswith(_RECORD_VERSION):
        raise STSError("does not begin with v=STSv1")
    rest = text[len(_RECORD_VERSION) :]
    recordId: str | None = None
    fields = 0
    while rest:
        separator = _SEPARATOR.match(rest)
        if separator is None:
            raise STSError(f"expected ';' before {rest[:20]!r}")
        rest = rest[separator.end() :]
        if not rest:
            break  # a trailing separator
        name = _EXTENSION_NAME.match(rest)
        if name is None or rest[name.end() : name.end() + 1] != "=":
            raise STSError(f"expected a field before {rest[:20]!r}")
        key = name.group(0)
        rest = rest[name.end() + 1 :]
        value = (_ID if key == "id" else _RECORD_EXTENSION_VALUE).match(rest)
        if value is None:
            raise STSError(f"bad value for {key!r}")
        rest = rest[value.end() :]
        fields += 1
        if key == "id" and recordId is None:
            recordId = value.group(0)
    if fields == 0:
        raise STSError("no fields after v=STSv1")
    if recordId is None:
        raise STSError("no id field")
    return STSRecord(recordId)


def selectRecord(texts: Sequence[bytes]) -> STSRecord | None:
    """
    The domain's MTA-STS record among its C{_mta-sts} TXT records: those
    that do not begin with C{v=STSv1;} are ignored (RFC 8461 3.1).

    @param texts: the TXT records, each with its strings joined.
    @return: the record; L{None} when there is none.
    @raise STSError: there are several, or the one is invalid (the domain
        then has no available policy either, but it is worth reporting).
    """
    candidates = []
    for raw in texts:
        text = raw.decode("ascii", "replace")
        if re.match(rf"v=STSv1{_WSP};", text):
            candidates.append(text)
    if not candidates:
        return None
    if len(candidates) > 1:
        raise STSError(f"{len(candidates)} MTA-STS TXT records")
    return parseRecord(candidates[0])


def _checkDomain(name: str) -> None:
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise STSError(f"mx {name!r} is not a domain in A-labels")


def parsePolicy(data: bytes) -> STSPolicy:
    """
    Parse a policy file (RFC 8461 3.2).

    @param data: the body served at C{/.well-known/mta-sts.txt}.
    @raise STSError: it is not UTF-8, does not follow the grammar, lacks
        C{version}, C{mode} or C{max_age}, or has no C{mx} while its mode is
        not C{none}.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise STSError("not UTF-8") from None
    if not text:
        raise STSError("empty")
    body = text
    if body.endswith("\r\n"):
        body = body[:-2]
    elif body.endswith("\n"):
        body = body[:-1]
    seen: dict[str, str] = {}
    mx: list[str] = []
    for number, line in enumerate(body.split("\n"), 1):
        if line.endswith("\r"):
            line = line[:-1]
        if "\r" in line:
            raise STSError(f"line {number}: a CR that does not end the line")
        match = _POLICY_LINE.fullmatch(line)
        if match is None:
            raise STSError(f"line {number} is not 'key: value'")
        key, value = match.groups()
        if _POLICY_VALUE.fullmatch(value) is None:
            raise STSError(f"line {number}: bad value for {key!r}")
        if key == "mx":
            pattern = value.lower()
            _checkDomain(pattern[2:] if pattern.startswith("*.") else pattern)
            mx.append(pattern)
            continue
        if key in seen:
            continue
        if key == "version" and value != "STSv1":
            raise STSError(f"version {value!r} is not STSv1")
        if key == "mode" and value not in _MODES:
            raise STSError(f"mode {value!r} is not one of {', '.join(_MODES)}")
        if key == "max_age":
            if _MAX_AGE.fullmatch(value) is None:
                raise STSError(f"max_age {value!r} is not a number of seconds")
            if int(value) > MAX_AGE_LIMIT:
                raise STSError(f"max_age {value} is over {MAX_AGE_LIMIT}")
        seen[key] = value
    for required in ("version", "mode", "max_age"):
        if required not in seen:
            raise STSError(f"no {required} field")
    mode = seen["mode"]
    if mode != NONE and not mx:
        raise STSError(f"mode {mode} without any mx field")
    return STSPolicy(mode, int(seen["max_age"]), tuple(dict.fromkeys(mx)), text)


def matchesPattern(pattern: str, hostname: str) -> bool:
    """
    Whether an MX host name matches one C{mx} pattern (RFC 8461 4.1): the
    same name, or for C{*.suffix} a name with exactly one more label on
    the left.  Case and a trailing dot are ignored.
    """
    host = hostname.rstrip(".").lower()
    pattern = pattern.lower()
    if pattern.startswith("*."):
        first, dot, rest = host.partition(".")
        return bool(first) and bool(dot) and rest == pattern[2:]
    return host == pattern
