# -*- test-case-name: tests.test_checks_dmarc -*-
"""
Organizational domains (RFC 7489, section 3.2) from the Public Suffix List.

The list is read from a file at start-up, never downloaded: Debian's
C{publicsuffix} package (L{DEBIAN_LIST}) when it is installed, else the copy
the C{publicsuffixlist} package from PyPI ships.  The matching is the list's
own algorithm (U{https://publicsuffix.org/list/}): the longest matching rule
wins, C{*} labels match any one label, C{!} rules are exceptions, and a name
no rule matches has its last label as public suffix.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

__all__ = ["DEBIAN_LIST", "PublicSuffixList", "defaultListPath", "loadPublicSuffixList"]

#: Where Debian's C{publicsuffix} package puts the list.
DEBIAN_LIST = "/usr/share/publicsuffix/public_suffix_list.dat"


def _ascii(label: str) -> str:
    """
    A rule or a name in the A-label form DNS names arrive in.
    """
    text = label.strip().lower().rstrip(".")
    if text.isascii():
        return text
    try:
        return text.encode("idna").decode("ascii")
    except UnicodeError:
        return text


class PublicSuffixList:
    """
    The rules of a Public Suffix List, ICANN and private sections alike (as
    OpenDMARC and the DMARC specification use them).
    """

    def __init__(self, lines: Iterable[str]) -> None:
        """
        @param lines: the list's lines; comments (C{//}) and blank lines are
            skipped, and only the first word of a line counts.
        """
        self._rules: set[tuple[str, ...]] = set()
        self._exceptions: set[tuple[str, ...]] = set()
        for line in lines:
            words = line.split()
            if not words or words[0].startswith("//"):
                continue
            rule = words[0]
            if rule.startswith("!"):
                self._exceptions.add(tuple(_ascii(rule[1:]).split(".")))
            else:
                self._rules.add(tuple(_ascii(rule).split(".")))

    def __len__(self) -> int:
        return len(self._rules) + len(self._exceptions)

    def _matches(self, labels: tuple[str, ...], rules: set[tuple[str, ...]]) -> int:
        """
        The label count of the longest rule in C{rules} matching the end of
        C{labels} (0 when none does).
        """
        best = 0
        for size in range(1, len(labels) + 1):
            tail = labels[-size:]
            if tail in rules or ("*",) + tail[1:] in rules:
                best = size
        return best

    def publicSuffix(self, domain: str) -> str:
        """
        The public suffix of C{domain} (lower case, A-labels, no trailing
        dot).
        """
        labels = tuple(label for label in _ascii(domain).split(".") if label)
        if not labels:
            return ""
        exception = self._matches(labels, self._exceptions)
        if exception:
            return ".".join(labels[-exception + 1 :]) if exception > 1 else ""
        size = self._matches(labels, self._rules) or 1
        return ".".join(labels[-size:])

    def organizationalDomain(self, domain: str) -> str:
        """
        The organizational domain of C{domain}: its public suffix and one
        more label; C{domain} itself when it is a public suffix.
        """
        name = ".".join(label for label in _ascii(domain).split(".") if label)
        suffix = self.publicSuffix(name)
        if not suffix or name == suffix:
            return name
        labels = name.split(".")
        return ".".join(labels[-(suffix.count(".") + 2) :])


def defaultListPath() -> str | None:
    """
    Debian's list when installed, else the one bundled with the
    C{publicsuffixlist} package, else L{None}.
    """
    if os.path.isfile(DEBIAN_LIST):
        return DEBIAN_LIST
    try:
        import publicsuffixlist  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    bundled = os.path.join(os.path.dirname(publicsuffixlist.__file__), "public_suffix_list.dat")
    return bundled if os.path.isfile(bundled) else None


def loadPublicSuffixList(path: str | None = None) -> PublicSuffixList:
    """
    Read a Public Suffix List file.

    @param path: the file (default L{defaultListPath}).
    @raise OSError: when there is no list or it cannot be read.
    """
    if path is None:
        path = defaultListPath()
        if path is None:
            raise FileNotFoundError(
                f"no Public Suffix List: install Debian's publicsuffix package ({DEBIAN_LIST}) "
                "or the publicsuffixlist Python package"
            )
    with open(path, encoding="utf-8") as f:
        return PublicSuffixList(f)
