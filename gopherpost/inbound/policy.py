# -*- test-case-name: tests.test_policy -*-
"""
The policy chain: an ordered list of L{IPolicy} objects that a session
consults at each stage (connect, HELO/EHLO, MAIL, RCPT, DATA, end of data).

For one stage the chain asks each policy in order.  L{None} goes on to the
next; the first reply ends the stage (a refusal, or an early accept); a
L{Deferred} pauses the chain until it fires, then goes on the same way.
An exception, a failed L{Deferred} or a result that is neither is logged
and becomes L{INTERNAL_ERROR}, so a broken policy never drops a session.
When every policy said "go on", the stage passes (L{None}).

A stage whose policies all answer synchronously answers synchronously: no
L{Deferred} is made on the common path.

Policies that keep count of what clients do wrong (bans) have a
C{violation(context, kind)} method; the session reports violations through
L{PolicyChain.violation} (see L{VIOLATIONS}).

When the connection is gone, L{PolicyChain.disconnect} tells every policy
that has a C{disconnect(context)} method (a milter conversation ends with
its session).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gopherpost.inbound.interfaces import IPolicy
from gopherpost.inbound.replies import Reply

__all__ = ["Policy", "PolicyChain", "STAGES", "INTERNAL_ERROR", "VIOLATIONS", "Verdict"]

_log = Logger()

#: The stages, in the order a session reaches them.
STAGES = ("connect", "helo", "mail", "rcpt", "data", "message")

#: The reply when a policy fails.
INTERNAL_ERROR = Reply(451, "4.3.0 Error: local error in processing", reason="policy-error")

#: What a hook or a stage returns.
Verdict = Reply | None | Deferred

#: The kinds of violation a session reports: a RCPT refused as relaying or
#: to an unknown address, a protocol error that ends the session
#: (pipelining out of turn, too many errors, a line too long), a failed
#: AUTH.
VIOLATIONS = ("relay_denied", "unknown_recipient", "protocol", "auth")


@implementer(IPolicy)
class Policy:
    """
    A policy that lets everything pass: subclass it and override the hooks
    you need (the chain does not call the others).
    """

    name = "policy"

    def connect(self, context: Any) -> Verdict:
        return None

    def helo(self, context: Any) -> Verdict:
        return None

    def mail(self, context: Any, transaction: Any) -> Verdict:
        return None

    def rcpt(self, context: Any, transaction: Any, recipient: Any) -> Verdict:
        return None

    def data(self, context: Any, transaction: Any) -> Verdict:
        return None

    def message(self, context: Any, transaction: Any, message: Any) -> Verdict:
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def _overrides(policy: Any, stage: str) -> bool:
    """
    Whether C{policy} does anything at C{stage}: a L{Policy} subclass that
    kept the base hook does not, nor does a policy whose C{stages}
    attribute (a collection of stage names, for adapters that have every
    hook) leaves the stage out.
    """
    if isinstance(policy, Policy):
        return getattr(type(policy), stage) is not getattr(Policy, stage)
    stages = getattr(policy, "stages", None)
    if stages is not None:
        return stage in stages
    return True


class PolicyChain:
    """
    An ordered chain of policies.

    @ivar policies: the policies, in order.
    """

    def __init__(self, policies: Sequence[Any]) -> None:
        self.policies = tuple(policies)
        self._byStage = {
            stage: tuple(p for p in self.policies if _overrides(p, stage)) for stage in STAGES
        }
        self._watchers = tuple(p for p in self.policies if callable(getattr(p, "violation", None)))
        self._disconnecting = tuple(
            p for p in self.policies if callable(getattr(p, "disconnect", None))
        )

    def __repr__(self) -> str:
        return f"<PolicyChain {[p.name for p in self.policies]}>"

    def run(self, stage: str, *args: Any) -> Verdict:
        """
        Ask the policies of C{stage}, in order.

        @param args: the hook's arguments (the context first).
        @return: the first reply, L{None} if every policy let it pass, or a
            L{Deferred} of either.
        """
        return self._runFrom(self._byStage[stage], 0, stage, args)

    def violation(self, context: Any, kind: str) -> None:
        """
        Tell the policies that keep count (those with a C{violation(context,
        kind)} method) that the client of C{context} did something wrong.
        Their results are not waited for; a policy that raises is logged.

        @param kind: one of L{VIOLATIONS}.
        """
        for policy in self._watchers:
            try:
                result = policy.violation(context, kind)
            except Exception:
                _log.failure("Policy {policy!r} failed to count a violation", policy=policy)
                continue
            if isinstance(result, Deferred):
                result.addErrback(self._violationFailed, policy)

    def _violationFailed(self, failure: Failure, policy: Any) -> None:
        _log.failure("Policy {policy!r} failed to count a violation", failure, policy=policy)

    def disconnect(self, context: Any) -> None:
        """
        The session of C{context} ended: call C{disconnect(context)} on each
        policy that has it (a failure is logged, the others still hear).
        """
        for policy in self._disconnecting:
            try:
                policy.disconnect(context)
            except Exception:
                _log.failure("Policy {policy!r} failed at disconnect", policy=policy)

    def _runFrom(self, policies: tuple[Any, ...], index: int, stage: str, args: tuple) -> Verdict:
        for i in range(index, len(policies)):
            policy = policies[i]
            try:
                result = getattr(policy, stage)(*args)
            except Exception:
                _log.failure("Policy {policy!r} failed at {stage}", policy=policy, stage=stage)
                return INTERNAL_ERROR
            if result is None:
                continue
            if type(result) is Reply:
                return result
            if isinstance(result, Deferred):
                result = self._settled(result, policy, stage)
                if isinstance(result, Deferred):
                    return result.addCallback(self._resumed, policies, i, stage, args)
                if result is None:
                    continue
            return self._checked(result, policy, stage)
        return None

    def _settled(self, d: Deferred, policy: Any, stage: str) -> Any:
        """
        The result of C{d} if it has fired already (the common case for
        an answer from memory), else C{d} with failures turned into
        L{INTERNAL_ERROR}: a stage answered at once answers synchronously.
        """
        box: list[Any] = []
        waiting = False

        def settle(result: Any) -> Any:
            if isinstance(result, Failure):
                result = self._failed(result, policy, stage)
            if waiting:
                return result
            box.append(result)
            return None

        d.addBoth(settle)
        if box:
            return box[0]
        waiting = True
        return d

    def _resumed(
        self, result: object, policies: tuple[Any, ...], index: int, stage: str, args: tuple
    ) -> Verdict:
        if result is None:
            return self._runFrom(policies, index + 1, stage, args)
        return self._checked(result, policies[index], stage)

    def _failed(self, failure: Failure, policy: Any, stage: str) -> Reply:
        _log.failure("Policy {policy!r} failed at {stage}", failure, policy=policy, stage=stage)
        return INTERNAL_ERROR

    def _checked(self, result: object, policy: Any, stage: str) -> Reply:
        if isinstance(result, Reply):
            return result
        _log.error(
            "Policy {policy!r} returned {result!r} at {stage}, not a reply",
            policy=policy,
            result=result,
            stage=stage,
        )
        return INTERNAL_ERROR
