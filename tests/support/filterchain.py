"""
A small stand-in for the inbound chain, for the filter tests: it runs
policies over one session's stages as the chain does (in order; the first
reply ends a stage; a refusal at connect, MAIL or DATA ends the session, at
RCPT drops that recipient), then tells every policy the session ended.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred

__all__ = ["runSession", "runStage"]


@defer.inlineCallbacks
def runStage(policies: Sequence[Any], stage: str, *args: Any) -> Generator[Deferred[Any], Any, Any]:
    """
    One stage: the first reply, or L{None}.
    """
    for policy in policies:
        reply = yield defer.maybeDeferred(getattr(policy, stage), *args)
        if reply is not None:
            return reply
    return None


@defer.inlineCallbacks
def runSession(
    policies: Sequence[Any], context: Any, transaction: Any, message: Any
) -> Generator[Deferred[Any], Any, dict[str, Any]]:
    """
    Connect, HELO, MAIL, RCPT (each recipient), DATA and the end of data.

    @return: the replies by stage (C{rcpt} a list); a stage not reached is
        missing.
    """
    replies: dict[str, Any] = {}
    try:
        for stage in ("connect", "helo"):
            replies[stage] = yield runStage(policies, stage, context)
            if replies[stage] is not None and replies[stage].code >= 400:
                return replies
        replies["mail"] = yield runStage(policies, "mail", context, transaction)
        if replies["mail"] is not None and replies["mail"].code >= 400:
            return replies
        accepted = []
        replies["rcpt"] = []
        for recipient in list(transaction.recipients):
            reply = yield runStage(policies, "rcpt", context, transaction, recipient)
            replies["rcpt"].append(reply)
            if reply is None or reply.code < 400:
                accepted.append(recipient)
        transaction.recipients[:] = accepted
        if not accepted:
            return replies
        replies["data"] = yield runStage(policies, "data", context, transaction)
        if replies["data"] is not None and replies["data"].code >= 400:
            return replies
        replies["message"] = yield runStage(policies, "message", context, transaction, message)
        return replies
    finally:
        for policy in policies:
            policy.disconnect(context)
