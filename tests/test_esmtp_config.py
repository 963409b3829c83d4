"""
C{SMTP_DELAY_WARNING} (L{gopherpost.config}).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.config import ConfigError, settingsFromEnvironment


class DelayWarningTests(SynchronousTestCase):
    """
    The delay after which a sender who asked is warned.
    """

    def test_default(self) -> None:
        """
        Four hours, as Postfix's delay_warning_time when turned on.
        """
        self.assertEqual(settingsFromEnvironment({}).delayWarning, 14400.0)

    def test_values(self) -> None:
        """
        Seconds or a number with a unit; 0 turns warnings off.
        """
        for raw, seconds in [("90", 90.0), ("30m", 1800.0), ("1d", 86400.0), ("0", 0.0)]:
            self.assertEqual(
                settingsFromEnvironment({"SMTP_DELAY_WARNING": raw}).delayWarning, seconds
            )

    def test_bad(self) -> None:
        """
        A bad value names the variable.
        """
        with self.assertRaises(ConfigError) as caught:
            settingsFromEnvironment({"SMTP_DELAY_WARNING": "soon"})
        self.assertIn("SMTP_DELAY_WARNING", str(caught.exception))
