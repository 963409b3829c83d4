# -*- test-case-name: tests.test_reloader -*-
"""
What a part of the server offers to live reload.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from gopherpost.config import Settings

__all__ = ["IReconfigurable"]


class IReconfigurable(Interface):
    """
    A part that can take a new configuration while the server runs.

    A reload goes in two steps, so that nothing changes unless everything
    can: every part first L{prepares<prepareReload>} the new settings
    (reads certificate and key files, builds new objects) without changing
    anything it serves with; then, only if every part could, each applies
    what it prepared.
    """

    name = Attribute("What the part is, for log lines (e.g. C{'inbound sessions'}).")
    fields = Attribute(
        "The L{gopherpost.config.Settings} field names the part reads "
        "(a frozenset): it is asked to reload when one of them changed."
    )

    def prepareReload(settings: Settings) -> object:
        """
        Get ready to work with C{settings}, changing nothing yet.

        @param settings: the new, validated L{gopherpost.config.Settings}.
        @return: a callable without arguments that applies them; it must not
            fail, and may return a L{twisted.internet.defer.Deferred} (e.g.
            when other processes are told).
        @raise gopherpost.config.ConfigError: naming the variable, when the
            new settings cannot be used (a certificate does not load): then
            nothing changes anywhere.
        """
