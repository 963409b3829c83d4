"""
Tests for L{gopherpost.relay.journal}: outcomes appended as they come, and
replayed onto the state files at start-up.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.relay.journal import Journal, replayJournals
from gopherpost.relay.state import DELIVERED, FAILED, PENDING, MessageState, StateStore
from gopherpost.spool import Envelope, Recipient

_DAY = "2026-11-22"


def _envelope(queueId: str, *addresses: str) -> Envelope:
    return Envelope(
        queueId=queueId,
        dateDirectory=_DAY,
        sender="a@gopherpost.test",
        recipients=tuple(Recipient(a, f"{n:016x}", False) for n, a in enumerate(addresses)),
        received=1.5,
        clientAddress="127.0.0.1",
        helo="client.test",
        size=10,
        tls=False,
    )


class JournalTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = self.mktemp()
        os.makedirs(os.path.join(self.path, _DAY))
        self.store = StateStore(self.path)
        self.journal = Journal(os.path.join(self.path, ".gopherpost", "relay-journal"))
        self.journal.open()
        self.envelopes: dict[str, Envelope] = {}

    def envelopeFor(self, dateDirectory: str, queueId: str) -> Envelope:
        return self.envelopes[queueId]

    def replay(self) -> int:
        return replayJournals(self.journal.directory, self.store, self.envelopeFor, 100.0)

    def journals(self) -> list[str]:
        return os.listdir(self.journal.directory)

    def delivered(self, state: MessageState, *addresses: str) -> list[Any]:
        recipients = [r for r in state.recipients if r.address in addresses]
        for r in recipients:
            r.status = DELIVERED
            r.lastHost = "mx.example.test"
            r.attempts = 1
        return recipients


class JournalFileTests(JournalTestCase):
    """
    One file per attempt, made at its first record, gone when discarded.
    """

    def test_lifecycle(self) -> None:
        """
        Nothing recorded: no file.  Recorded: one line per record; closed
        with C{discard} the file goes, without it stays.
        """
        empty = self.journal.start()
        empty.close(discard=True)
        self.assertEqual(self.journals(), [])
        state = MessageState.forEnvelope(_envelope("Q1", "b@x.test", "c@x.test"), 1.0)
        first = self.journal.start()
        first.record(state, self.delivered(state, "b@x.test"), withDKIM=False)
        first.record(state, self.delivered(state, "c@x.test"), withDKIM=False)
        [name] = self.journals()
        with open(os.path.join(self.journal.directory, name), "rb") as f:
            self.assertEqual(f.read().count(b"\n"), 2)
        second = self.journal.start()
        second.record(state, self.delivered(state, "b@x.test"), withDKIM=False)
        self.assertEqual(len(self.journals()), 2)
        first.close(discard=True)
        second.close(discard=False)
        self.assertEqual(len(self.journals()), 1)


class ReplayTests(JournalTestCase):
    """
    At start-up, journals left behind become state files.
    """

    def test_ontoSavedState(self) -> None:
        """
        A message saved pending earlier, delivered per the journal: its
        state becomes C{.relayed} and the journal goes.
        """
        state = MessageState.forEnvelope(_envelope("Q1", "b@x.test"), 1.0)
        self.store.save(state)
        journal = self.journal.start()
        journal.record(state, self.delivered(state, "b@x.test"), withDKIM=False)
        self.assertEqual(self.replay(), 1)
        self.assertTrue(self.store.isFinished(_DAY, "Q1"))
        self.assertEqual(sorted(os.listdir(os.path.join(self.path, _DAY))), ["Q1.relayed"])
        self.assertEqual(self.journals(), [])

    def test_withoutState(self) -> None:
        """
        A message never saved: its state is rebuilt from the envelope, with
        the DKIM header the journal kept, the journaled recipients final and
        the others pending, due now.
        """
        self.envelopes["Q2"] = _envelope("Q2", "b@x.test", "c@x.test", "d@x.test")
        state = MessageState.forEnvelope(self.envelopes["Q2"], 1.0)
        state.dkimHeader = "DKIM-Signature: v=1\r\n"
        journal = self.journal.start()
        journal.record(state, self.delivered(state, "b@x.test"), withDKIM=True)
        failed = [r for r in state.recipients if r.address == "c@x.test"]
        failed[0].status, failed[0].lastError = FAILED, "550 5.1.1 no such user"
        journal.record(state, failed, withDKIM=True)
        self.assertEqual(self.replay(), 1)
        restored = self.store.load(_DAY, "Q2")
        assert restored is not None
        self.assertEqual(restored.dkimHeader, "DKIM-Signature: v=1\r\n")
        self.assertEqual(
            [(r.address, r.status, r.attempts) for r in restored.recipients],
            [("b@x.test", DELIVERED, 1), ("c@x.test", FAILED, 0), ("d@x.test", PENDING, 0)],
        )
        self.assertEqual(restored.recipients[1].lastError, "550 5.1.1 no such user")
        self.assertEqual(restored.recipients[2].nextAttempt, 100.0)

    def test_cutShort(self) -> None:
        """
        A last line a crash cut short is ignored with a warning; the lines
        before it count.
        """
        self.envelopes["Q3"] = _envelope("Q3", "b@x.test", "c@x.test")
        state = MessageState.forEnvelope(self.envelopes["Q3"], 1.0)
        journal = self.journal.start()
        journal.record(state, self.delivered(state, "b@x.test"), withDKIM=False)
        journal.close(discard=False)
        with open(journal.path, "ab") as f:
            f.write(b'{"d":"2026-11-22","q":"Q3","r":[["c@x.te')
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)  # type: ignore[arg-type]
        self.assertEqual(self.replay(), 1)
        restored = self.store.load(_DAY, "Q3")
        assert restored is not None
        self.assertEqual([r.status for r in restored.recipients], [DELIVERED, PENDING])
        self.assertEqual(
            [e["log_level"] for e in events if "cut-short" in e.get("log_format", "")],
            [LogLevel.warn],
        )

    def test_finishedAndUnreadable(self) -> None:
        """
        A message already finished is left alone; one whose envelope cannot
        be read is skipped with a warning; the journal goes.
        """
        done = MessageState.forEnvelope(_envelope("Q4", "b@x.test"), 1.0)
        self.delivered(done, "b@x.test")
        self.store.save(done)
        lost = MessageState.forEnvelope(_envelope("Q5", "b@x.test"), 1.0)
        journal = self.journal.start()
        journal.record(done, done.recipients, withDKIM=False)
        journal.record(lost, self.delivered(lost, "b@x.test"), withDKIM=False)
        self.assertEqual(self.replay(), 0)
        self.assertEqual(self.journals(), [])
        self.assertIsNone(self.store.load(_DAY, "Q5"))

    def test_keptWhenNotSaved(self) -> None:
        """
        When a state cannot be written, the journals stay for the next
        start-up.
        """
        state = MessageState.forEnvelope(_envelope("Q6", "b@x.test"), 1.0)
        self.store.save(state)
        journal = self.journal.start()
        journal.record(state, self.delivered(state, "b@x.test"), withDKIM=False)

        def fail(state: MessageState) -> None:
            raise OSError(28, "No space left on device")

        self.patch(self.store, "save", fail)
        self.assertEqual(self.replay(), 0)
        self.assertEqual(len(self.journals()), 1)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_noDirectory(self) -> None:
        """
        No journal directory (a spool from before journals): nothing to do.
        """
        self.assertEqual(replayJournals(self.mktemp(), self.store, self.envelopeFor, 1.0), 0)
