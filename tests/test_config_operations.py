"""
Tests for the operations settings of L{gopherpost.config} (issue 14): spool
retention.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.config import ConfigError, settingsFromEnvironment


def _settings(**environ: str):
    return settingsFromEnvironment({"SMTP_HOSTNAME": "mx.test", **environ})


class RetentionSettingsTests(SynchronousTestCase):
    """
    C{SMTP_KEEP_DELIVERED}, C{SMTP_RETENTION_DAYS},
    C{SMTP_RETENTION_MAX_MESSAGES}.
    """

    def test_defaults(self) -> None:
        """
        Delivered mail goes at once; local mail is kept for ever.
        """
        settings = _settings()
        self.assertEqual(settings.keepDelivered, 0.0)
        self.assertEqual(settings.retentionDays, 0)
        self.assertEqual(settings.retentionMaxMessages, 0)

    def test_durations(self) -> None:
        """
        C{SMTP_KEEP_DELIVERED} takes seconds or a number with a unit.
        """
        for raw, seconds in [
            ("90", 90),
            ("30m", 1800),
            ("12h", 43200),
            ("7d", 604800),
            ("2w", 1209600),
            ("1.5h", 5400),
            (" 7D ", 604800),
        ]:
            self.assertEqual(_settings(SMTP_KEEP_DELIVERED=raw).keepDelivered, seconds, raw)

    def test_badValues(self) -> None:
        """
        A bad value is one error naming the variable.
        """
        for name, raw in [
            ("SMTP_KEEP_DELIVERED", "soon"),
            ("SMTP_KEEP_DELIVERED", "-1d"),
            ("SMTP_KEEP_DELIVERED", "7y"),
            ("SMTP_RETENTION_DAYS", "30d"),
            ("SMTP_RETENTION_DAYS", "-1"),
            ("SMTP_RETENTION_MAX_MESSAGES", "lots"),
        ]:
            error = self.assertRaises(ConfigError, _settings, **{name: raw})
            self.assertEqual(error.variable, name)
            self.assertNotIn("\n", str(error))
