# -*- test-case-name: tests.test_relay_control -*-
"""
The relay queue's control commands (C{gopherpostctl queue flush|hold|
release|delete|bounce}), offered on the control socket
(L{gopherpost.control}): the running server carries them out, since it
owns the queue's state files.

Each takes C{ids} (queue ids, any case) and, for C{flush} and C{delete},
C{all}; each answers with the ids it acted on and those not in the queue
(C{notFound}: C{gopherpostctl} then exits with status 1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from zope.interface import implementer

from gopherpost.control.registry import BAD_REQUEST, ControlError, IControlCommands
from gopherpost.queueview import InvalidQueueId, normalizeQueueId

__all__ = ["QueueCommands"]


def _ids(ids: Any, everything: Any = False, allowsAll: bool = False) -> list[str] | None:
    """
    The queue ids asked for, normalised; L{None} for every message.

    @raise ControlError: not a list of queue ids, or neither ids nor all.
    """
    if ids is None:
        ids = []
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ControlError(BAD_REQUEST, "ids is a list of queue ids")
    if not isinstance(everything, bool):
        raise ControlError(BAD_REQUEST, "all is true or false")
    if everything:
        if not allowsAll:
            raise ControlError(BAD_REQUEST, "this command takes no 'all'")
        if ids:
            raise ControlError(BAD_REQUEST, "name queue ids or all, not both")
        return None
    if not ids:
        raise ControlError(BAD_REQUEST, "name queue ids" + (" or all" if allowsAll else ""))
    try:
        return [normalizeQueueId(i) for i in ids]
    except InvalidQueueId as e:
        raise ControlError(BAD_REQUEST, str(e)) from None


@implementer(IControlCommands)
class QueueCommands:
    """
    C{queue.flush}, C{queue.hold}, C{queue.release}, C{queue.delete} and
    C{queue.bounce}, carried out by a L{gopherpost.relay.queue.RelayQueue}.

    @param queue: the relay queue (C{flush}, C{hold}, C{release},
        C{delete}, C{bounce}).
    """

    def __init__(self, queue: Any) -> None:
        self._queue = queue

    def controlCommands(self) -> Mapping[str, Callable[..., Any]]:
        """
        The commands.
        """
        return {
            "queue.flush": self.flush,
            "queue.hold": self.hold,
            "queue.release": self.release,
            "queue.delete": self.delete,
            "queue.bounce": self.bounce,
        }

    def flush(self, ids: Any = None, all: Any = False) -> Deferred[Any]:
        """
        Try these messages now (postqueue -f / -i); held ones stay held.
        """
        return maybeDeferred(self._queue.flush, _ids(ids, all, allowsAll=True))

    def hold(self, ids: Any = None) -> Deferred[Any]:
        """
        Never try these messages until released (postsuper -h).
        """
        return maybeDeferred(self._queue.hold, _ids(ids))

    def release(self, ids: Any = None) -> Deferred[Any]:
        """
        Release held messages, due at once (postsuper -H).
        """
        return maybeDeferred(self._queue.release, _ids(ids))

    def delete(self, ids: Any = None, all: Any = False) -> Deferred[Any]:
        """
        Remove messages from the queue without a bounce (postsuper -d).
        """
        return maybeDeferred(self._queue.delete, _ids(ids, all, allowsAll=True))

    def bounce(self, ids: Any = None) -> Deferred[Any]:
        """
        Give up on messages now, with a DSN to the sender.
        """
        return maybeDeferred(self._queue.bounce, _ids(ids))
