# -*- test-case-name: tests.test_reload_changes -*-
"""
What a reload changes: the L{Settings} fields whose values differ, and the
files whose content differs although their names did not (a renewed
certificate, a rotated DKIM key).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gopherpost.config import Settings
from gopherpost.variables import VARIABLES

__all__ = ["FILE_FIELDS", "Changes", "fileDigests", "changesBetween"]

#: The fields that name a file read at start-up (and at every reload).
FILE_FIELDS = ("tlsCert", "tlsKey", "dkimKeyPath")


def fileDigests(settings: Settings) -> dict[str, str | None]:
    """
    The SHA-256 of each file C{settings} names (L{FILE_FIELDS}); L{None}
    for a file that is not set or cannot be read.  The files are small
    (certificates and keys): read at once.
    """
    digests: dict[str, str | None] = {}
    for name in FILE_FIELDS:
        path = getattr(settings, name, None)
        digests[name] = None
        if path:
            try:
                with open(path, "rb") as f:
                    digests[name] = hashlib.sha256(f.read()).hexdigest()
            except OSError:
                pass
    return digests


@dataclass(frozen=True)
class Changes:
    """
    The difference between two configurations.

    @ivar fields: the fields whose values differ.
    @ivar files: the fields whose file content differs under the same name.
    """

    fields: frozenset[str]
    files: frozenset[str]

    @property
    def all(self) -> frozenset[str]:
        """
        Every field changed, by value or by file content.
        """
        return self.fields | self.files

    def __bool__(self) -> bool:
        return bool(self.fields or self.files)

    def variables(self, among: Iterable[str] | None = None) -> list[str]:
        """
        The variables that changed (those of C{among} fields only, if
        given), a file whose content changed as C{"SMTP_TLS_CERT (file)"};
        in the order of L{gopherpost.variables.VARIABLES}.
        """
        wanted = self.all if among is None else self.all & frozenset(among)
        names = []
        for variable in VARIABLES:
            if variable.field in wanted:
                suffix = " (file)" if variable.field in self.files - self.fields else ""
                names.append(variable.name + suffix)
        # Fields no variable sets (added by other parts) are named as such.
        named = {v.field for v in VARIABLES}
        names += sorted(f for f in wanted if f not in named)
        return names


def changesBetween(
    old: Settings,
    new: Settings,
    oldDigests: Mapping[str, str | None],
    newDigests: Mapping[str, str | None],
) -> Changes:
    """
    What changed from C{old} to C{new}.
    """
    fields = frozenset(
        f.name for f in dataclasses.fields(Settings) if getattr(old, f.name) != getattr(new, f.name)
    )
    files = frozenset(
        name
        for name in FILE_FIELDS
        if name not in fields and oldDigests.get(name) != newDigests.get(name)
    )
    return Changes(fields, files)
