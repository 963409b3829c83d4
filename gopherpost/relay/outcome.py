# -*- test-case-name: tests.test_relay_outcome -*-
"""
What the outbound SMTP client reports: the remote server's replies, each
recipient's outcome, and the result of one message sent to one host.

These are plain frozen values: the client session (L{gopherpost.relay.session})
builds them, the courier (L{gopherpost.relay.courier}) passes them on, and
the queue records them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from twisted.python.failure import Failure

__all__ = [
    "SENT",
    "DEFERRED",
    "FAILED",
    "Reply",
    "RecipientOutcome",
    "DeliveryResult",
    "statusFor",
    "defaultEnhancedCode",
    "cleanText",
    "describeConnectionError",
]

#: Recipient status: the remote server accepted the message for it.
SENT = "sent"
#: Recipient status: temporary failure; try another host or retry later.
DEFERRED = "deferred"
#: Recipient status: permanent failure; bounce.
FAILED = "failed"

_ENHANCED = re.compile(r"^([245])\.([0-9]{1,3})\.([0-9]{1,3})(?:\s+|$)")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


def cleanText(text: str) -> str:
    """
    C{text} with control characters replaced by C{?}: remote text goes into
    logs and DSNs.
    """
    if text.isprintable():
        # Nothing to replace (the usual case): no regular expression.
        return text
    return _UNPRINTABLE.sub("?", text)


def describeConnectionError(reason: Failure) -> str:
    """
    One line for a connection-level error, TLS errors included.
    """
    value = reason.value
    errors = getattr(value, "args", ())
    # OpenSSL.SSL.Error: args[0] is a list of (library, function, reason).
    if errors and isinstance(errors[0], list) and errors[0]:
        reasons = [str(e[-1]) for e in errors[0] if isinstance(e, tuple) and e]
        if reasons:
            return ", ".join(dict.fromkeys(reasons))
    # service_identity.VerificationError carries .errors.
    mismatches = getattr(value, "errors", None)
    if mismatches:
        return (
            "certificate does not match the host name ("
            + ", ".join(type(m).__name__ for m in mismatches)
            + ")"
        )
    text = str(value) or type(value).__name__
    return cleanText(text.splitlines()[0] if text else type(value).__name__)


def statusFor(code: int) -> str:
    """
    The recipient status a reply code means: 2xx L{SENT}, 5xx L{FAILED},
    anything else L{DEFERRED}.
    """
    return {2: SENT, 4: DEFERRED, 5: FAILED}.get(code // 100, DEFERRED)


def defaultEnhancedCode(code: int) -> str:
    """
    The RFC 3463 status to report for a reply that carries none: the class
    of C{code} with C{.0.0} (C{4.0.0} for a code outside 2xx/4xx/5xx).
    """
    return f"{code // 100}.0.0" if code // 100 in (2, 4, 5) else "4.0.0"


@dataclass(frozen=True)
class Reply:
    """
    One (possibly multi-line) SMTP reply.

    @ivar code: the three-digit code.
    @ivar lines: the text of each line, decoded, without the code.
    """

    code: int
    lines: tuple[str, ...] = ()

    @property
    def enhancedCode(self) -> str | None:
        """
        The RFC 3463 status code the reply starts with (class matching
        C{code}), or L{None}.
        """
        if not self.lines:
            return None
        match = _ENHANCED.match(self.lines[0])
        if match is None or int(match.group(1)) != self.code // 100:
            return None
        return ".".join(match.groups())

    @property
    def text(self) -> str:
        """
        The reply text on one line, enhanced codes removed.
        """
        parts = []
        for line in self.lines:
            match = _ENHANCED.match(line)
            if match is not None and int(match.group(1)) == self.code // 100:
                line = line[match.end() :]
            parts.append(line.strip())
        return " ".join(part for part in parts if part)

    def __str__(self) -> str:
        enhanced = self.enhancedCode
        return " ".join(str(x) for x in (self.code, enhanced, self.text) if x)


class RecipientOutcome(NamedTuple):
    """
    What happened to one recipient.

    @ivar recipient: the address.
    @ivar status: L{SENT}, L{DEFERRED} or L{FAILED}.  This is the verdict to
        act on; C{code} may disagree (a C{554} greeting defers the host).
    @ivar code: the SMTP reply code (a synthetic one when C{remote} is
        false: 421 for local temporary trouble, 55x for local refusals).
    @ivar enhancedCode: the RFC 3463 status, e.g. C{"5.1.1"} (the remote
        one when given, else derived from the class of C{code}).
    @ivar text: one line: the server's reply text, or our own diagnosis.
    @ivar remote: whether C{code}/C{text} came from the remote server (a
        DSN then reports them as C{Diagnostic-Code: smtp; ...}).
    """

    recipient: str
    status: str
    code: int
    enhancedCode: str
    text: str
    remote: bool

    @property
    def diagnosticCode(self) -> str | None:
        """
        C{"smtp; 550 5.1.1 text"} for a remote reply, else L{None}.
        """
        if not self.remote:
            return None
        return f"smtp; {self.code} {self.enhancedCode} {self.text}".rstrip()

    @property
    def line(self) -> str:
        """
        The outcome on one line, C{"550 5.1.1 text"}: what the queue keeps
        as a recipient's last error and a DSN reports.
        """
        return f"{self.code} {self.enhancedCode} {self.text}".strip()


class DeliveryResult(NamedTuple):
    """
    The outcome of one message sent to one host.

    @ivar host: the MX host name the connection was for.
    @ivar address: the IP address connected to.
    @ivar port: the port connected to.
    @ivar outcomes: one L{RecipientOutcome} per distinct recipient, in order.
    @ivar accepted: whether the server answered 2xx to the final dot.
    @ivar tlsUsed: whether the message went over TLS.
    @ivar tlsVersion: e.g. C{"TLSv1.3"}, when known.
    @ivar cipher: e.g. C{"TLS_AES_256_GCM_SHA384"}, when known.
    @ivar failureStage: where the message last failed (C{"connect"},
        C{"greeting"}, C{"TLS"}, C{"MAIL"}, C{"RCPT"}, C{"DATA"},
        C{"end of data"}, ...); L{None} when the message was accepted (even
        if some RCPTs were refused).
    @ivar connectSeconds: how long setting up the connection took (TCP,
        greeting, EHLO, STARTTLS), or how long the failed attempt to set it
        up lasted; C{0} for the later messages of a connection, which found
        it ready.
    @ivar transferSeconds: how long this message's transaction took, from
        its first command to the reply to its final dot (or its failure).
    """

    host: str
    address: str
    port: int
    outcomes: tuple[RecipientOutcome, ...]
    accepted: bool = False
    tlsUsed: bool = False
    tlsVersion: str | None = None
    cipher: str | None = None
    failureStage: str | None = None
    connectSeconds: float = 0.0
    transferSeconds: float = 0.0
    # esmtp: whether the server offered DSN (RFC 3461): it was given the
    # sender's DSN parameters and reports success and delay itself.
    dsnOffered: bool = False
    #: Which use of its connection the message's delivery was: 1 for the
    #: delivery that made it, 2 and on when the connection was taken up
    #: again (see L{gopherpost.relay.connectioncache}; Postfix's
    #: C{conn_use}).
    connectionUse: int = 1

    def outcomeFor(self, recipient: str) -> RecipientOutcome:
        """
        @raise KeyError: C{recipient} was not in the envelope.
        """
        for outcome in self.outcomes:
            if outcome.recipient == recipient:
                return outcome
        raise KeyError(recipient)

    def _withStatus(self, status: str) -> tuple[str, ...]:
        return tuple(o.recipient for o in self.outcomes if o.status == status)

    @property
    def sent(self) -> tuple[str, ...]:
        """
        Recipients the server accepted the message for.
        """
        return self._withStatus(SENT)

    @property
    def deferred(self) -> tuple[str, ...]:
        """
        Recipients with a temporary failure.
        """
        return self._withStatus(DEFERRED)

    @property
    def failed(self) -> tuple[str, ...]:
        """
        Recipients with a permanent failure.
        """
        return self._withStatus(FAILED)
