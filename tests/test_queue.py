"""
Unit tests for L{gopherpost.relay.queue}'s schedule and state files.
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.relay.queue import retryDelay
from gopherpost.relay.state import DELIVERED, MessageState, RecipientState, StateStore


class RetryDelayTests(SynchronousTestCase):
    """
    Capped exponential backoff with jitter.
    """

    def test_doublesAndCaps(self) -> None:
        """
        The upper bound doubles from SMTP_RETRY_INITIAL and stops at
        SMTP_RETRY_MAX; jitter only shortens, by at most a quarter.
        """
        rnd = random.Random(1)
        for attempts, bound in [(1, 60), (2, 120), (3, 240), (7, 3840), (8, 3840), (40, 3840)]:
            for _ in range(50):
                delay = retryDelay(attempts, 60, 3840, rnd)
                self.assertTrue(0.75 * bound <= delay <= bound, (attempts, delay))

    def test_spread(self) -> None:
        """
        Retries of many messages at the same step spread out.
        """
        rnd = random.Random(2)
        delays = {round(retryDelay(3, 60, 3840, rnd)) for _ in range(100)}
        self.assertGreater(len(delays), 30)


class StateStoreTests(SynchronousTestCase):
    """
    The C{.relay} files.
    """

    def test_roundTripAndFinish(self) -> None:
        """
        A saved state loads back equal; once every recipient is final the
        file becomes C{.relayed}.
        """
        import os

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
        import os

        path = self.mktemp()
        os.makedirs(os.path.join(path, "2026-11-22"))
        store = StateStore(path)
        for raw in (b"", b'{"queueId": "ABC", "recip', b'{"version": 1}'):
            with open(os.path.join(path, "2026-11-22", "ABC.relay"), "wb") as f:
                f.write(raw)
            self.assertIsNone(store.load("2026-11-22", "ABC"))
        self.assertEqual(len(self.flushLoggedErrors()), 0)
