"""
Tests for L{gopherpost.relay.state}: the C{.relay} files.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.relay.state import DELIVERED, MessageState, RecipientState, StateStore


class StateStoreTests(SynchronousTestCase):
    """
    The C{.relay} files.
    """

    def test_roundTripAndFinish(self) -> None:
        """
        A saved state loads back equal; once every recipient is final the
        file becomes C{.relayed}.
        """
        path = self.mktemp()
        os.makedirs(os.path.join(path, "2026-11-22"))
        store = StateStore(path)
        state = MessageState(
            "ABC",
            "2026-11-22",
            1.5,
            "a@gopherpost.test",
            [
                RecipientState(
                    "b@example.test", "0123456789abcdef", attempts=2, lastError="451 4.3.0 x"
                )
            ],
            "DKIM-Signature: v=1\r\n",
        )
        store.save(state)
        self.assertEqual(store.load("2026-11-22", "ABC"), state)
        self.assertFalse(store.isFinished("2026-11-22", "ABC"))
        state.recipients[0].status = DELIVERED
        store.save(state)
        self.assertTrue(store.isFinished("2026-11-22", "ABC"))
        self.assertEqual(sorted(os.listdir(os.path.join(path, "2026-11-22"))), ["ABC.relayed"])
        self.assertEqual(store.load("2026-11-22", "ABC"), state)

    def test_unreadableIsMissing(self) -> None:
        """
        A state file a crash left empty or cut short loads as no state (the
        message starts again from its envelope), with a warning.
        """
        path = self.mktemp()
        os.makedirs(os.path.join(path, "2026-11-22"))
        store = StateStore(path)
        for raw in (b"", b'{"queueId": "ABC", "recip', b'{"version": 1}'):
            with open(os.path.join(path, "2026-11-22", "ABC.relay"), "wb") as f:
                f.write(raw)
            self.assertIsNone(store.load("2026-11-22", "ABC"))
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_finishedAfterRestart(self) -> None:
        """
        A message left pending by an earlier process (or an unreadable
        state) loses its C{.relay} file when a new store finishes it.
        """
        path = self.mktemp()
        os.makedirs(os.path.join(path, "2026-11-22"))
        state = MessageState(
            "ABC", "2026-11-22", 1.5, "a@gopherpost.test", [RecipientState("b@x.test", "0" * 16)]
        )
        StateStore(path).save(state)
        store = StateStore(path)
        loaded = store.load("2026-11-22", "ABC")
        assert loaded is not None
        loaded.recipients[0].status = DELIVERED
        store.save(loaded)
        self.assertEqual(os.listdir(os.path.join(path, "2026-11-22")), ["ABC.relayed"])
        with open(os.path.join(path, "2026-11-22", "DEF.relay"), "wb") as f:
            f.write(b"{")
        self.assertIsNone(store.load("2026-11-22", "DEF"))
        store.save(MessageState("DEF", "2026-11-22", 1.5, "a@gopherpost.test", []))
        self.assertEqual(
            sorted(os.listdir(os.path.join(path, "2026-11-22"))), ["ABC.relayed", "DEF.relayed"]
        )
