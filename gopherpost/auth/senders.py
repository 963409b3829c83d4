# -*- test-case-name: tests.test_auth_senders -*-
"""
Sender rights: the envelope (and optionally header) senders an
authenticated user may use, as Postfix's C{reject_sender_login_mismatch}
checks them.

A user owns their own name when it is an address, plus the patterns the
users file gives them: an address (C{alice@example.org}) or a pattern with
C{*} standing for any run of characters other than C{@}
(C{*@example.org}, C{sales-*@example.org}, C{*@*.example.org});
C{@example.org} is short for C{*@example.org}.  Matching ignores case, and
an address extension (C{alice+lists@example.org}) belongs to whoever owns
the address without it, as Postfix looks up C{smtpd_sender_login_maps}.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

__all__ = ["SenderPatternError", "SenderRights", "parseSenderPattern", "EXTENSION_DELIMITER"]

#: The address extension delimiter (Postfix's C{recipient_delimiter}).
EXTENSION_DELIMITER = "+"

_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+\Z")
_DOMAIN = re.compile(r"[A-Za-z0-9*-]+(\.[A-Za-z0-9*-]+)*\Z")


class SenderPatternError(ValueError):
    """
    A sender pattern is not valid; the message is one line.
    """


def parseSenderPattern(text: str) -> str:
    """
    Check and normalize one pattern.

    @return: the pattern in lower case (C{@domain} as C{*@domain}).
    @raise SenderPatternError: if it is not an address or address pattern.
    """
    pattern = text.strip().lower()
    if pattern.startswith("@"):
        pattern = "*" + pattern
    local, at, domain = pattern.rpartition("@")
    if (
        not at
        or len(pattern) > 254
        or not _LOCAL.match(local)
        or "@" in local
        or not _DOMAIN.match(domain.rstrip("."))
    ):
        raise SenderPatternError(
            f"{text!r} is not a sender address or pattern "
            "(e.g. alice@example.org, *@example.org, @example.org)"
        )
    return local + "@" + domain.rstrip(".")


def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile("".join("[^@]*" if c == "*" else re.escape(c) for c in pattern) + r"\Z")


def _ownAddress(name: str) -> str | None:
    """
    The user's name as a pattern, when it is an address without C{*}.
    """
    if "*" in name:
        return None
    try:
        return parseSenderPattern(name) if "@" in name[1:] else None
    except SenderPatternError:
        return None


@dataclass(frozen=True)
class SenderRights:
    """
    What one user may send as.

    @ivar user: the user name (owned when it is an address).
    @ivar patterns: the user's own patterns, normalized.
    """

    user: str
    patterns: tuple[str, ...] = ()

    @classmethod
    def of(cls, user: str, patterns: Iterable[str]) -> SenderRights:
        """
        The rights of C{user} with C{patterns} (checked).

        @raise SenderPatternError: for a bad pattern.
        """
        return cls(user, tuple(parseSenderPattern(p) for p in patterns))

    @cached_property
    def _matchers(self) -> tuple[re.Pattern[str], ...]:
        own = _ownAddress(self.user)
        patterns = ((own,) if own is not None else ()) + self.patterns
        return tuple(_regex(p) for p in patterns)

    @property
    def owned(self) -> tuple[str, ...]:
        """
        Every pattern the user owns, their own address first.
        """
        own = _ownAddress(self.user)
        return ((own,) if own is not None else ()) + self.patterns

    def owns(self, address: str) -> bool:
        """
        Whether the user may use C{address} as a sender.  The null sender
        (C{""}) is everyone's.
        """
        if not address:
            return True
        wanted = address.strip().lower().rstrip(".")
        candidates = [wanted]
        local, at, domain = wanted.rpartition("@")
        if at and EXTENSION_DELIMITER in local[1:]:
            base = local[: local.index(EXTENSION_DELIMITER, 1)]
            candidates.append(base + "@" + domain)
        return any(m.match(c) for m in self._matchers for c in candidates)
