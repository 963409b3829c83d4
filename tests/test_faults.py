"""
Tests for L{gopherpost.faults}, the fault injection of the kill tests.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.faults import COMMIT_STEPS, CrashPoints


class CrashPointsTests(SynchronousTestCase):
    """
    Parsing C{GOPHERPOST_TEST_CRASH_AT} and counting occurrences.
    """

    def test_unset(self) -> None:
        """
        Unset or empty, nothing is armed and no step kills.
        """
        for environ in ({}, {"GOPHERPOST_TEST_CRASH_AT": " "}):
            points = CrashPoints.fromEnvironment(environ)
            self.assertFalse(points.enabled)
        killed = []
        points = CrashPoints(kill=lambda: killed.append(True))
        for step in COMMIT_STEPS:
            points.reached(step)
        self.assertEqual(killed, [])

    def test_occurrence(self) -> None:
        """
        C{STEP:N} kills at the N-th time a message reaches STEP, once.
        """
        points = CrashPoints.fromEnvironment({"GOPHERPOST_TEST_CRASH_AT": "linked:3"})
        self.assertTrue(points.enabled)
        killed = []
        points._kill = lambda: killed.append(True)
        for _ in range(2):
            points.reached("linked")
            points.reached("content-written")
        self.assertEqual(killed, [])
        points.reached("linked")
        self.assertEqual(killed, [True])
        points.reached("linked")
        self.assertEqual(killed, [True])

    def test_defaultFirst(self) -> None:
        """
        Without C{:N}, the first message to reach the step dies there.
        """
        killed = []
        points = CrashPoints("acknowledged", kill=lambda: killed.append(True))
        points.reached("acknowledged")
        self.assertEqual(killed, [True])

    def test_invalid(self) -> None:
        """
        An unknown step or a bad count is a L{ValueError} naming the
        variable.
        """
        for value in ("nowhere", "linked:x", "linked:0"):
            error = self.assertRaises(
                ValueError, CrashPoints.fromEnvironment, {"GOPHERPOST_TEST_CRASH_AT": value}
            )
            self.assertIn("GOPHERPOST_TEST_CRASH_AT", str(error))
