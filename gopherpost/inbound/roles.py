# -*- test-case-name: tests.test_factory -*-
"""
The roles an SMTP listener can have.

Each listener (C{SMTP_LISTEN}, C{SMTP_SUBMISSION_LISTEN},
C{SMTP_SUBMISSIONS_LISTEN}) serves one role; a role decides how a session
starts (implicit TLS or not), what it requires before a transaction, and
which policy chain judges it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ListenerRole", "SMTP", "SUBMISSION", "SUBMISSIONS", "ROLES"]


@dataclass(frozen=True)
class ListenerRole:
    """
    What one listener is for.

    @ivar name: C{"smtp"} (relay and MX, port 25), C{"submission"} (RFC 6409,
        port 587) or C{"submissions"} (RFC 8314 implicit TLS, port 465).
    @ivar variable: the setting that configures its listeners.
    @ivar implicitTLS: the TLS handshake comes before the banner.
    @ivar requireTLS: MAIL needs TLS first (C{530 5.7.0}).
    """

    name: str
    variable: str
    implicitTLS: bool = False
    requireTLS: bool = False


SMTP = ListenerRole("smtp", "SMTP_LISTEN")
SUBMISSION = ListenerRole("submission", "SMTP_SUBMISSION_LISTEN", requireTLS=True)
SUBMISSIONS = ListenerRole("submissions", "SMTP_SUBMISSIONS_LISTEN", implicitTLS=True)

#: Every role, in the order listeners are started and reported.
ROLES = (SMTP, SUBMISSION, SUBMISSIONS)
