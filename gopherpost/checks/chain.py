# -*- test-case-name: tests.test_checks_chain -*-
"""
The MX checks on the inbound chain.

The checks speak their own narrow interfaces (L{gopherpost.checks.interfaces}):
replies as C{(code, text)}, the message as an L{IMessageView}.  L{ChainPolicy}
makes one of them a policy of the inbound chain
(L{gopherpost.inbound.interfaces.IPolicy}):

  - a reply becomes an inbound L{Reply} with a reason for the audit events
    and metrics (C{"ban"}, C{"rate-limit"}, C{"dnsbl"}, C{"spf"},
    C{"greylist"}, C{"dmarc"}); a C{421} closes the connection after it;
  - the end-of-data message is seen through L{MessageView};
  - a check that counts violations (bans) hears the session's
    (L{gopherpost.inbound.policy.PolicyChain.violation}).

The session's L{SessionContext} and L{Transaction} already have the shape
of L{ISessionView} and L{ITransactionView}; they are passed as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from gopherpost.checks.interfaces import IMessageView, IMXPolicy, IViolationSink
from gopherpost.checks.policies import PolicyBase
from gopherpost.inbound.interfaces import IPolicy, IReceivedMessage
from gopherpost.inbound.policy import STAGES
from gopherpost.inbound.replies import Action, Reply

__all__ = ["ChainPolicy", "MessageView", "REASONS", "chainPolicies"]

#: The reason of each check's refusals (audit events, metrics), by its name.
REASONS = {
    "bans": "ban",
    "rate-limits": "rate-limit",
    "dnsbl": "dnsbl",
    "spf": "spf",
    "greylist": "greylist",
    "message-authentication": "dmarc",
}


@implementer(IMessageView)
class MessageView:
    """
    An inbound message at the end of data (L{IReceivedMessage}), as the
    checks see it.

    @param message: the message; its own header section and body are what
        L{read} gives (not our C{Received:} header or the fields policies
        added), as they arrived.
    """

    def __init__(self, message: IReceivedMessage) -> None:
        self._message = message

    @property
    def headers(self) -> list[tuple[str, str]]:
        """
        The message's own header fields, C{(name, value)}, values unfolded.
        """
        headers: list[tuple[str, str]] = self._message.headers
        return headers

    def read(self) -> Deferred[bytes]:
        """
        The message as received: its header section, the empty line, its
        body (from the spilled file when it is large).
        """
        section: bytes = self._message.headerSection
        d: Deferred[bytes] = self._message.readBody()
        return d.addCallback(lambda body: section + b"\r\n" + body)

    def prependHeader(self, name: str, value: str) -> None:
        """
        Add a field below our C{Received:} header, folded where C{value}
        has line breaks.
        """
        self._message.addHeader(name, value.replace("\r\n", "\n"))

    def removeHeaders(self, name: str, predicate: Any) -> int:
        """
        Remove the fields called C{name} whose value C{predicate} accepts.
        """
        removed: int = self._message.removeHeaders(name, predicate)
        return removed


@implementer(IPolicy)
class ChainPolicy:
    """
    One MX check as a policy of the inbound chain (see the module
    docstring).

    @ivar check: the L{IMXPolicy}.
    @ivar name: its name.
    @ivar reason: the reason its refusals carry.
    """

    def __init__(self, check: IMXPolicy, reason: str | None = None) -> None:
        self.check = check
        self.name: str = check.name
        self.reason = reason or REASONS.get(check.name, check.name)
        #: The stages at which the check does anything: the chain skips
        #: the others (a L{PolicyBase} subclass that kept a base hook
        #: lets that stage pass).
        self.stages: frozenset[str] = frozenset(
            stage
            for stage in STAGES
            if not isinstance(check, PolicyBase)
            or getattr(type(check), stage) is not getattr(PolicyBase, stage)
        )
        if IViolationSink.providedBy(check):
            # The chain hands violations to the policies that have this.
            self.violation = check.violation

    def __repr__(self) -> str:
        return f"<ChainPolicy {self.name}>"

    def _reply(self, result: Any) -> Any:
        if result is None:
            return None
        if isinstance(result, Deferred):
            return result.addCallback(self._reply)
        if isinstance(result, Reply):
            return result
        code, text = result
        action = Action.CLOSE if code == 421 else Action.NONE
        return Reply(int(code), str(text), action, reason=self.reason)

    def connect(self, context: Any) -> Any:
        return self._reply(self.check.connect(context))

    def helo(self, context: Any) -> Any:
        return self._reply(self.check.helo(context))

    def mail(self, context: Any, transaction: Any) -> Any:
        return self._reply(self.check.mail(context, transaction))

    def rcpt(self, context: Any, transaction: Any, recipient: Any) -> Any:
        return self._reply(self.check.rcpt(context, transaction, recipient))

    def data(self, context: Any, transaction: Any) -> Any:
        return self._reply(self.check.data(context, transaction))

    def message(self, context: Any, transaction: Any, message: Any) -> Any:
        return self._reply(self.check.message(context, transaction, MessageView(message)))


def chainPolicies(checks: Sequence[IMXPolicy]) -> list[ChainPolicy]:
    """
    The checks as policies of the inbound chain, in their order.
    """
    return [ChainPolicy(check) for check in checks]
