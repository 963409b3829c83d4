# -*- test-case-name: tests.test_index_mailbox -*-
"""
The mailbox the API and the web UI show: the index for finding messages,
the spool for their content, and the events a live page listens to.

Every method returns a L{Deferred}; the blocking work runs in the index's
threads (L{gopherpost.index.service.IndexService.read} and C{write}).
Deleting removes the message from the spool first (durably, see
L{gopherpost.index.removal}) and then from the index, so a crash in
between leaves nothing that comes back.

Events (L{Mailbox.subscribe}) are C{(kind, data)}, as Mailpit's
websocket sends them: C{"new"} (a message summary), C{"delete"}
(C{{"ID": ...}}), C{"update"} (C{{"ID": ..., "Read": ...}}), C{"prune"}
(many changed: reload), C{"stats"} (C{{"Total": ..., "Unread": ...}}).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from gopherpost.index.database import IndexDatabase
from gopherpost.index.loop import IIndexListener
from gopherpost.index.query import SearchQuery
from gopherpost.index.removal import removeMessages
from gopherpost.index.retention import PRUNE_BATCH, IRetentionPolicy
from gopherpost.index.service import IndexService
from gopherpost.spool import Envelope, Spool

__all__ = ["Mailbox", "MessageNotFound", "Event", "LIVE_NEW_LIMIT"]

_log = Logger()

#: C{(kind, data)}.
Event = tuple[str, Any]

#: New messages announced one by one at most; beyond, one C{"prune"}
#: (reload) event.
LIVE_NEW_LIMIT = 50


class MessageNotFound(KeyError):
    """
    No such message in the index (or its files are gone).
    """


@implementer(IIndexListener)
class Mailbox:
    """
    Messages as the API sees them.

    @param relayRuns: whether a relay queue runs (not in capture mode).
    @param retention: what to prune after new messages arrive (capture
        mode: the newest N are kept); L{None}: nothing.
    """

    def __init__(
        self,
        index: IndexService,
        spool: Spool,
        clock: Any,
        relayRuns: bool = True,
        retention: IRetentionPolicy | None = None,
    ) -> None:
        self.index = index
        self.spool = spool
        self._clock = clock
        self.relayRuns = relayRuns
        self._retention = retention
        self._subscribers: list[Callable[[str, Any], None]] = []
        self._pruning: Deferred | None = None
        self._pruneAgain = False
        #: Messages deleted since start-up (the API's C{info}).
        self.deleted = 0
        index.addListener(self)

    # -- events ------------------------------------------------------------

    def subscribe(self, callback: Callable[[str, Any], None]) -> Callable[[], None]:
        """
        Call C{callback(kind, data)} for every later event.

        @return: a function that cancels the subscription.
        """
        self._subscribers.append(callback)

        def cancel() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return cancel

    @property
    def subscriberCount(self) -> int:
        """
        How many subscribers there are.
        """
        return len(self._subscribers)

    def publish(self, kind: str, data: Any) -> None:
        """
        Tell every subscriber.
        """
        for callback in list(self._subscribers):
            try:
                callback(kind, data)
            except Exception:
                _log.failure("Mailbox event subscriber failed")

    def _publishStats(self) -> Deferred:
        if not self._subscribers:
            return succeed(None)
        d = self.index.read(lambda db: db.counts())
        d.addCallback(lambda c: self.publish("stats", {"Total": c[0], "Unread": c[1]}))
        d.addErrback(lambda f: None)
        return d

    # -- IIndexListener --------------------------------------------------------

    def ready(self, rebuilt: bool) -> None:
        self.publish("prune", None)
        self._prune()

    def indexed(self, ids: list[str], catchUp: bool) -> None:
        self._prune()
        if not self._subscribers:
            return
        if catchUp or len(ids) > LIVE_NEW_LIMIT:
            self.publish("prune", None)
            self._publishStats()
            return

        def summaries(db: IndexDatabase) -> list[dict[str, Any]]:
            found = []
            for id in ids:
                record = db.message(id)
                if record is not None:
                    found.append(record["summary"])
            return found

        d = self.index.read(summaries)

        def announce(found: list[dict[str, Any]]) -> Deferred:
            for summary in found:
                self.publish("new", summary)
            return self._publishStats()

        d.addCallback(announce)
        d.addErrback(lambda f: _log.failure("Could not announce new messages", f))

    # -- pruning ------------------------------------------------------------

    def _prune(self) -> None:
        if self._retention is None:
            return
        if self._pruning is not None:
            self._pruneAgain = True
            return
        retention = self._retention
        now = self._clock.seconds()
        d = self.index.write(lambda db: self._removeInThread(db, retention.expired(db, now)))
        self._pruning = d

        def done(removed: list[str]) -> None:
            self._pruning = None
            if removed:
                self._announceRemoved(removed)
            if self._pruneAgain or len(removed) >= PRUNE_BATCH:
                self._pruneAgain = False
                self._prune()

        def failed(failure: Any) -> None:
            self._pruning = None
            _log.failure("Pruning the mailbox failed", failure)

        d.addCallbacks(done, failed)

    # -- reading ------------------------------------------------------------

    def resolve(self, id: str) -> Deferred:
        """
        The id itself, or for C{"latest"} the newest message's.

        @return: fires with the id, or fails with L{MessageNotFound}.
        """
        if id != "latest":
            return succeed(id)

        def latest(db: IndexDatabase) -> str:
            found = db.latestId()
            if found is None:
                raise MessageNotFound("there are no messages")
            return found

        return self.index.read(latest)

    def summaries(
        self,
        query: SearchQuery,
        start: int,
        limit: int,
        before: float | None = None,
        filtered: bool = False,
    ) -> Deferred:
        """
        Mailpit's C{MessagesSummary} for a page of messages.

        @param filtered: a search (C{messages_count} counts its matches)
            rather than the whole mailbox.
        """

        def run(db: IndexDatabase) -> dict[str, Any]:
            total, unread = db.counts()
            if filtered or before is not None:
                messages, matching, matchingUnread = db.page(query, start, limit, before)
            else:
                messages = db.search(query, start, limit, before)
                matching, matchingUnread = total, unread
            return {
                "total": total,
                "unread": unread,
                "count": len(messages),
                "messages_count": matching,
                "messages_unread": matchingUnread,
                "start": start,
                "tags": db.tagNames(),
                "messages": messages,
            }

        return self.index.read(run)

    def record(self, id: str) -> Deferred:
        """
        The indexed facts of one message (see
        L{IndexDatabase.message}).

        @return: fails with L{MessageNotFound}.
        """

        def run(db: IndexDatabase) -> dict[str, Any]:
            record = db.message(id)
            if record is None:
                raise MessageNotFound(id)
            return record

        return self.index.read(run)

    def envelope(self, record: dict[str, Any]) -> Envelope:
        """
        The spool's envelope of an indexed message (blocking, small).

        @raise MessageNotFound: if it is gone.
        """
        try:
            return self.spool.envelopeIn(record["dateDirectory"], record["id"])
        except (OSError, ValueError, TypeError, KeyError):
            raise MessageNotFound(record["id"]) from None

    def content(self, id: str) -> Deferred:
        """
        C{(record, envelope, raw bytes)} of one message (read in a thread).

        @return: fails with L{MessageNotFound}.
        """

        def run(db: IndexDatabase) -> tuple[dict[str, Any], Envelope, bytes]:
            record = db.message(id)
            if record is None:
                raise MessageNotFound(id)
            envelope = self.envelope(record)
            try:
                with open(self.spool.messagePath(envelope), "rb") as f:
                    return record, envelope, f.read()
            except OSError:
                raise MessageNotFound(id) from None

        return self.index.read(run)

    def tags(self) -> Deferred:
        """
        Every tag in use.
        """
        return self.index.read(lambda db: db.tagNames())

    def tagCounts(self) -> Deferred:
        """
        Tag -> messages.
        """
        return self.index.read(lambda db: db.tagCounts())

    def counts(self) -> Deferred:
        """
        C{(total, unread)}.
        """
        return self.index.read(lambda db: db.counts())

    # -- changing -----------------------------------------------------------

    def setRead(self, ids: Sequence[str] | None, read: bool) -> Deferred:
        """
        Mark messages (C{None}: all) read or unread.
        """
        d = self.index.write(lambda db: db.setRead(None if ids is None else list(ids), read))

        def changed(changedIds: list[str]) -> Deferred | None:
            if len(changedIds) > LIVE_NEW_LIMIT:
                self.publish("prune", None)
            else:
                for id in changedIds:
                    self.publish("update", {"ID": id, "Read": read})
            return self._publishStats() if changedIds else None

        return d.addCallback(changed)

    def setReadMatching(self, query: SearchQuery, read: bool) -> Deferred:
        """
        Mark every message matching C{query} read or unread.
        """
        d = self.index.read(lambda db: db.idsMatching(query))
        return d.addCallback(lambda ids: self.setRead(ids, read))

    def setTags(self, ids: Sequence[str], tags: Sequence[str]) -> Deferred:
        """
        Replace the tags of messages.
        """
        d = self.index.write(lambda db: db.setTags(list(ids), list(tags)))
        return d.addCallback(lambda _: self.publish("prune", None))

    def renameTag(self, old: str, new: str) -> Deferred:
        """
        Rename a tag everywhere.
        """
        d = self.index.write(lambda db: db.renameTag(old, new))
        return d.addCallback(lambda _: self.publish("prune", None))

    def deleteTag(self, name: str) -> Deferred:
        """
        Remove a tag everywhere.
        """
        d = self.index.write(lambda db: db.deleteTag(name))
        return d.addCallback(lambda _: self.publish("prune", None))

    def delete(self, ids: Sequence[str] | None) -> Deferred:
        """
        Delete messages (C{None}: every message) from the spool and the
        index.

        @return: fires with the ids removed from the index.
        """

        def run(db: IndexDatabase) -> list[str]:
            if ids is None:
                entries = db.oldest(-1)
            else:
                entries = db.locations(list(ids))
            return self._removeInThread(db, entries)

        d = self.index.write(run)
        return d.addCallback(self._announceRemoved)

    def deleteMatching(self, query: SearchQuery) -> Deferred:
        """
        Delete every message matching C{query}.
        """
        d = self.index.read(lambda db: db.idsMatching(query))
        return d.addCallback(self.delete)

    def _announceRemoved(self, removed: list[str]) -> list[str]:
        self.deleted += len(removed)
        if len(removed) > LIVE_NEW_LIMIT:
            self.publish("prune", None)
        else:
            for id in removed:
                self.publish("delete", {"ID": id})
        if removed:
            self._publishStats()
        return removed

    def _removeInThread(self, db: IndexDatabase, entries: Sequence[tuple[str, str]]) -> list[str]:
        """
        Remove C{(id, dateDirectory)} messages: files first, then the index
        rows (a message still queued for a remote recipient only leaves the
        index).  Runs in the writer thread.
        """
        envelopes: list[Envelope] = []
        vanished: list[str] = []
        for id, dateDirectory in entries:
            try:
                envelopes.append(self.spool.envelopeIn(dateDirectory, id))
            except FileNotFoundError:
                vanished.append(id)
            except (OSError, ValueError, TypeError, KeyError) as e:
                _log.warn("Deleting {id}: unreadable envelope ({error})", id=id, error=e)
                vanished.append(id)
        removed, kept = removeMessages(self.spool, envelopes, self.relayRuns)
        db.delete([e.queueId for e in removed] + vanished)
        db.hide([(e.queueId, e.dateDirectory) for e in kept])
        return [e.queueId for e in removed + kept] + vanished
