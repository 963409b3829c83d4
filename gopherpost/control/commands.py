# -*- test-case-name: tests.test_control_commands -*-
"""
The control commands the server offers itself, and the read-only queue
views.

  - C{server.status}: version, process, listeners, spool, relay and TLS;
  - C{config.show}: every variable's effective value and origin (secrets
    masked), as the running server sees them;
  - C{config.reload}: a live reload (as SIGHUP), answered with its outcome;
  - C{queue.list}, C{queue.show}, C{queue.summary}: the queue as the spool
    files describe it (L{gopherpost.queueview}); C{gopherpostctl} runs the
    same functions itself when the server is not running.

The queue actions (C{queue.flush}, C{queue.hold}, C{queue.release},
C{queue.delete}, C{queue.bounce}) belong to the relay queue, which
registers them (L{gopherpost.control.registry.IControlCommands}).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from gopherpost.control.registry import BAD_REQUEST, NOT_FOUND, ControlError, IControlCommands
from gopherpost.queueview import InvalidQueueId, QueueView

__all__ = [
    "ServerCommands",
    "QueueViewCommands",
    "queueList",
    "queueShow",
    "queueSummary",
]


def queueList(path: str, limit: int | None = None) -> dict[str, Any]:
    """
    The messages in the relay queue, oldest first (the first C{limit}).
    """
    view = QueueView(path)
    messages: list[dict[str, Any]] = []
    count = size = 0
    for message in view.messages():
        count += 1
        size += message.size
        if limit is None or len(messages) < limit:
            messages.append(message.asJSON())
    return {"messages": messages, "count": count, "size": size}


def queueShow(path: str, queueId: str, body: bool = False) -> dict[str, Any]:
    """
    One spooled message (queued or not): envelope, recipients, headers,
    and with C{body} the whole content.  Content is text with the bytes
    that are not UTF-8 escaped as lone surrogates (C{surrogateescape}), so
    that C{gopherpostctl} writes back the exact bytes.

    @raise ControlError: no such message, or not a queue id.
    """
    view = QueueView(path)
    try:
        message = view.find(queueId)
    except InvalidQueueId as e:
        raise ControlError(BAD_REQUEST, str(e)) from None
    if message is None:
        raise ControlError(NOT_FOUND, f"no message {queueId.strip().upper()} in the spool")
    result = message.asJSON()
    try:
        if body:
            result["content"] = view.content(message).decode("utf-8", "surrogateescape")
        else:
            result["headers"] = view.headers(message).decode("utf-8", "surrogateescape")
    except OSError:
        raise ControlError(NOT_FOUND, f"the content of {message.queueId} is gone") from None
    return result


def queueSummary(path: str, now: float) -> dict[str, Any]:
    """
    The queue's shape by destination domain and age (see
    L{QueueView.summary}).
    """
    return QueueView(path).summary(now)


@implementer(IControlCommands)
class QueueViewCommands:
    """
    C{queue.list}, C{queue.show} and C{queue.summary}, read from the spool
    in a thread.

    @param runInThread: C{runInThread(f, *args) -> Deferred}.
    @param clock: gives the time for the summary's ages.
    """

    def __init__(
        self, spoolPath: str, runInThread: Callable[..., Deferred[Any]], clock: Any
    ) -> None:
        self._path = spoolPath
        self._runInThread = runInThread
        self._clock = clock

    def controlCommands(self) -> Mapping[str, Callable[..., Any]]:
        """
        The commands.
        """
        return {
            "queue.list": self.list,
            "queue.show": self.show,
            "queue.summary": self.summary,
        }

    def list(self, limit: int | None = None) -> Deferred[Any]:
        """
        The messages in the relay queue (mailq).
        """
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ControlError(BAD_REQUEST, "limit is a whole number")
        return self._runInThread(queueList, self._path, limit)

    def show(self, queueId: str, body: bool = False) -> Deferred[Any]:
        """
        One message: envelope, recipients, headers (or all its content).
        """
        if not isinstance(queueId, str):
            raise ControlError(BAD_REQUEST, "queueId is text")
        return self._runInThread(queueShow, self._path, queueId, bool(body))

    def summary(self) -> Deferred[Any]:
        """
        Pending recipients by destination domain and age (qshape).
        """
        return self._runInThread(queueSummary, self._path, self._clock.seconds())


@implementer(IControlCommands)
class ServerCommands:
    """
    C{server.status}, C{config.show} and C{config.reload}.

    @param status: returns the server's status (JSON-able).
    @param configuration: returns C{config.show}'s rows.
    @param reload: runs a reload, returning a Deferred of its outcome as
        JSON.
    """

    def __init__(
        self,
        status: Callable[[], dict[str, Any]],
        configuration: Callable[[], list[dict[str, str]]],
        reload: Callable[[], Deferred[dict[str, Any]]],
    ) -> None:
        self._status = status
        self._configuration = configuration
        self._reload = reload

    def controlCommands(self) -> Mapping[str, Callable[..., Any]]:
        """
        The commands.
        """
        return {
            "server.status": self.status,
            "config.show": self.show,
            "config.reload": self.reload,
        }

    def status(self) -> dict[str, Any]:
        """
        What runs: version, process id, uptime, listeners, spool, relay.
        """
        return self._status()

    def show(self) -> dict[str, Any]:
        """
        Every variable's effective value and origin, secrets masked.
        """
        return {"variables": self._configuration()}

    def reload(self) -> Deferred[dict[str, Any]]:
        """
        Reload the configuration now (as SIGHUP does) and say what changed.
        """
        return self._reload()
