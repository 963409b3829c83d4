"""
Tests for L{gopherpost.inbound.timeouts}: the DATA deadline.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.inbound.timeouts import DataDeadline


class DataDeadlineTests(SynchronousTestCase):
    """
    Postfix's deadline: reads use up time and earn it back at the minimum
    rate, never more than the timeout in hand.
    """

    def test_silence(self) -> None:
        """
        The first read may come as late as the timeout.
        """
        deadline = DataDeadline(30, 500, now=100)
        self.assertEqual(deadline.left, 30)
        self.assertAlmostEqual(deadline.received(1, now=129), 1 + 1 / 500)

    def test_earnedBack(self) -> None:
        """
        Octets earn C{octets / rate} seconds, capped at the timeout.
        """
        deadline = DataDeadline(30, 500, now=0)
        self.assertAlmostEqual(deadline.received(5000, now=10), 30)
        self.assertAlmostEqual(deadline.received(500, now=25), 16)

    def test_trickle(self) -> None:
        """
        One octet every 3 s runs out after about the timeout.
        """
        deadline = DataDeadline(30, 500, now=0)
        now, reads = 0.0, 0
        while deadline.received(1, now=now) > 0:
            now += 3
            reads += 1
        self.assertEqual(reads, 11)

    def test_rateOff(self) -> None:
        """
        A rate of 0 is an idle timer: every read restores the timeout.
        """
        deadline = DataDeadline(10, 0, now=0)
        self.assertEqual(deadline.received(1, now=9), 10)
        self.assertEqual(deadline.received(1, now=18), 10)
